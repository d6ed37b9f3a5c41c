"""Tests of pyrauc.keyfile against GLib GKeyFile behaviour.

Expected strings were obtained from GLib 2.74 (python3-gi, G_KEY_FILE_NONE) and are fixed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pyrauc.errors import KeyFileError, RaucError
from pyrauc.keyfile import KeyFile


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[a]\nk=1\nk=2\n", "[a]\nk=1\nk=2\n"),
        ("[a]\nx=1\n[b]\ny=2\n[a]\nz=3\n", "[a]\nx=1\nz=3\n\n[b]\ny=2\n"),
        ("# c\n\n[a]\n  k  =  v  \n\n\n[b]\n#x\ny=2", "[a]\nk=v  \n\n[b]\ny=2\n"),
        ("[a]\r\nk=v\r\n", "[a]\nk=v\n"),
        ("[a]\nk=v\r\r\n[b]\r\n", "[a]\nk=v\r\n\n[b]\n"),
        ("  # x\n\t[a]\t\n\tk\t=\tv\n", "[a]\nk=v\n"),
        ("[a]\nk\t=\tv\t\n", "[a]\nk=v\t\n"),
        ("[a]\nk=v\n\n", "[a]\nk=v\n"),
        ("[a]\na=b=c\n[b]\n[c]\n", "[a]\na=b=c\n\n[b]\n\n[c]\n"),
        ("[a]\nk[de]=x\nk[C]=1\nk=2\n", "[a]\nk[C]=1\nk=2\n"),
        ("", ""),
    ],
)
def test_parse_to_data_like_glib(text: str, expected: str) -> None:
    assert KeyFile.parse(text).to_data() == expected
    assert KeyFile.parse(text.encode()).to_data() == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("k=v\n", "Key file does not start with a group"),
        ("[a]\n=v\n", "Key file contains line “=v” which is not a key-value pair, group, or comment"),
        ("[a]\nfoo\n", "Key file contains line “foo” which is not a key-value pair, group, or comment"),
        ("[a\n", "Key file contains line “[a” which is not a key-value pair, group, or comment"),
        ("[a]x\n", "Key file contains line “[a]x” which is not a key-value pair, group, or comment"),
        ("[]\n", "Invalid group name: "),
        ("[a[b]\n", "Invalid group name: a[b"),
        ("[a]\n k [de]=x\n", "Invalid key name: k [de]"),
        ("[a]\nk[de=x\n", "Invalid key name: k[de"),
    ],
)
def test_syntax_errors(text: str, message: str) -> None:
    with pytest.raises(KeyFileError) as exc:
        KeyFile.parse(text)
    assert str(exc.value) == message
    assert isinstance(exc.value, RaucError)


def test_missing_group_and_key() -> None:
    kf = KeyFile.parse("[a]\nk=v\n")
    with pytest.raises(KeyFileError, match=r"^Key file does not have group “x”$"):
        kf.get_string("x", "k")
    with pytest.raises(KeyFileError, match=r"^Key file does not have key “z” in group “a”$"):
        kf.get_string("a", "z")
    assert kf.has_group("a") and not kf.has_group("x")
    assert kf.has_key("a", "k") and not kf.has_key("a", "z") and not kf.has_key("x", "k")


def test_string_escapes_decode() -> None:
    kf = KeyFile.parse("[a]\nk=\\s a\\tb\\nc\\\\d\\re \n")
    assert kf.get_value("a", "k") == "\\s a\\tb\\nc\\\\d\\re "
    assert kf.get_string("a", "k") == "  a\tb\nc\\d\re "


@pytest.mark.parametrize("value", ["a\\;b", "x\\", "a\\xb"])
def test_string_invalid_escape(value: str) -> None:
    kf = KeyFile.parse(f"[a]\nk={value}\n")
    with pytest.raises(KeyFileError, match=r"^Key file contains key “k” which has a value that cannot be"):
        kf.get_string("a", "k")


def test_set_string_escapes_like_glib() -> None:
    kf = KeyFile()
    kf.set_string("a", "s", " lead\ttab\nnl\\ trail ")
    kf.set_string("a", "t", "  two\t \tx")
    kf.set_string("a", "u", "\t x;y")
    kf.set_string("a", "e", "")
    assert kf.to_data() == "[a]\ns=\\slead\ttab\\nnl\\\\ trail \nt=\\s\\stwo\t \tx\nu=\\t\\sx;y\ne=\n"
    back = KeyFile.parse(kf.to_data())
    assert back.get_string("a", "s") == " lead\ttab\nnl\\ trail "
    assert back.get_string("a", "u") == "\t x;y"


def test_lists() -> None:
    kf = KeyFile.parse("[a]\nl=a;b\\;c;;d\nl2=a;b;\nl3=\nl4=;\nl5=a\\\\;b\nl6=a;b\\\n")
    assert kf.get_string_list("a", "l") == ["a", "b;c", "", "d"]
    assert kf.get_string_list("a", "l2") == ["a", "b"]
    assert kf.get_string_list("a", "l3") == []
    assert kf.get_string_list("a", "l4") == [""]
    assert kf.get_string_list("a", "l5") == ["a\\", "b"]
    with pytest.raises(KeyFileError, match="key “l6” which has a value that cannot be interpreted"):
        kf.get_string_list("a", "l6")


def test_set_string_list() -> None:
    kf = KeyFile()
    kf.set_string_list("a", "l", ["x;y", "z", " w ", "a\\b"])
    kf.set_string_list("a", "e", [])
    kf.set_string_list("a", "one", [""])
    kf.set_string_list("a", "hooks", ["pre-install", "post-install"])
    assert kf.to_data() == "[a]\nl=x\\;y;z;\\sw ;a\\\\b;\ne=\none=;\nhooks=pre-install;post-install;\n"
    assert KeyFile.parse(kf.to_data()).get_string_list("a", "l") == ["x;y", "z", " w ", "a\\b"]


def test_booleans() -> None:
    kf = KeyFile.parse("[a]\nb1=true\nb2=1\nb3=TRUE\nb4=0\nb5=false \nb6=yes\n")
    assert kf.get_boolean("a", "b1") is True
    assert kf.get_boolean("a", "b2") is True
    assert kf.get_boolean("a", "b4") is False
    assert kf.get_boolean("a", "b5") is False
    for key in ("b3", "b6"):
        with pytest.raises(KeyFileError) as exc:
            kf.get_boolean("a", key)
        assert str(exc.value) == (
            f"Key file contains key “{key}” which has a value that cannot be interpreted."
        )
    kf.set_boolean("a", "b1", False)
    assert kf.get_value("a", "b1") == "false"


def test_integers() -> None:
    kf = KeyFile.parse(
        "[a]\ni1= 12\ni2=12 \ni3=+3\ni4=0x10\ni5=\ni6=-0\ni7=99999999999\nu=-1\nn=12 x\nb=true\n"
    )
    assert kf.get_integer("a", "i1") == 12
    assert kf.get_integer("a", "i2") == 12
    assert kf.get_integer("a", "i3") == 3
    assert kf.get_integer("a", "i6") == 0
    assert kf.get_integer("a", "u") == -1
    assert kf.get_integer("a", "n") == 12  # strtol stops at whitespace: GLib accepts this
    for key in ("i4", "i5", "i7", "b"):
        with pytest.raises(KeyFileError) as exc:
            kf.get_integer("a", key)
        assert str(exc.value) == (
            f"Key file contains key “{key}” in group “a” which has a value that cannot be interpreted."
        )


def test_uint64() -> None:
    kf = KeyFile.parse(
        "[a]\nbig=99999999999\nmax=18446744073709551615\nover=99999999999999999999999\n"
        "neg=-1\nsp=12 \nhex=0x10\ne=\n"
    )
    assert kf.get_uint64("a", "big") == 99999999999
    assert kf.get_uint64("a", "max") == 2**64 - 1
    assert kf.get_uint64("a", "over") == 2**64 - 1
    assert kf.get_uint64("a", "neg") == 2**64 - 1
    for key, value in (("sp", "12 "), ("hex", "0x10"), ("e", "")):
        with pytest.raises(KeyFileError) as exc:
            kf.get_uint64("a", key)
        assert str(exc.value) == f"Key “{key}” in group “a” has value “{value}” where uint64 was expected"
    kf.set_uint64("a", "big", 2**63)
    kf.set_integer("a", "max", -7)
    assert kf.get_value("a", "big") == "9223372036854775808"
    assert kf.get_integer("a", "max") == -7


def test_duplicate_keys_last_wins_and_stale_copy_stays() -> None:
    kf = KeyFile.parse("[a]\nk=1\nx=0\nk=2\n")
    assert kf.get_string("a", "k") == "2"
    assert kf.keys("a") == ["k", "x", "k"]
    kf.set_value("a", "k", "9")
    assert kf.to_data() == "[a]\nk=1\nx=0\nk=9\n"
    kf.remove_key("a", "k")
    assert kf.keys("a") == ["k", "x"]
    assert not kf.has_key("a", "k")
    assert kf.to_data() == "[a]\nk=1\nx=0\n"


def test_duplicate_groups_merge() -> None:
    kf = KeyFile.parse("[a]\nk=1\n[b]\n[a]\nk=3\n")
    assert kf.groups() == ["a", "b"]
    assert kf.keys("a") == ["k", "k"]
    assert kf.get_string("a", "k") == "3"


def test_set_value_replaces_in_place_and_groups_append() -> None:
    kf = KeyFile.parse("[a]\nk=1\nz=0\n")
    kf.set_value("a", "k", "2")
    kf.set_value("b", "n", "3")
    kf.set_value("a", "m", "4")
    assert kf.to_data() == "[a]\nk=2\nz=0\nm=4\n\n[b]\nn=3\n"
    kf.remove_group("a")
    assert kf.to_data() == "[b]\nn=3\n"
    with pytest.raises(KeyFileError, match="does not have group “a”"):
        kf.remove_group("a")
    with pytest.raises(KeyFileError, match="Invalid key name: "):
        kf.set_value("b", "", "x")


def test_consume_and_strict_checks() -> None:
    kf = KeyFile.parse(
        "[update]\ncompatible=x\nlist=a;b;\nflag=true\nnum=5\nbig=7\nempty=\nextra=1\n[other]\n"
    )
    assert kf.consume_string("update", "compatible") == "x"
    assert kf.consume_string("update", "compatible", "dflt") == "dflt"
    assert kf.consume_string("nogroup", "k") is None
    assert kf.consume_string_list("update", "list") == ["a", "b"]
    assert kf.consume_boolean("update", "flag") is True
    assert kf.consume_integer("update", "num") == 5
    assert kf.consume_uint64("update", "big") == 7
    assert kf.consume_boolean("update", "nope", False) is False
    with pytest.raises(KeyFileError, match=r"^Missing value for key 'empty'$"):
        kf.consume_string("update", "empty")
    kf.remove_key("update", "empty")
    with pytest.raises(KeyFileError, match=r"^Invalid key 'extra' in group '\[update\]'$"):
        kf.ensure_group_consumed("update")
    kf.remove_key("update", "extra")
    kf.ensure_group_consumed("update")
    assert not kf.has_group("update")
    kf.ensure_group_consumed("update")  # absent group: nothing to complain about
    with pytest.raises(KeyFileError, match=r"^Invalid group '\[other\]'$"):
        kf.ensure_consumed()
    kf.ensure_group_consumed("other")
    kf.ensure_consumed()


def test_duplicate_key_is_left_over_after_consume() -> None:
    kf = KeyFile.parse("[a]\nk=1\nk=2\n")
    assert kf.consume_string("a", "k") == "2"
    with pytest.raises(KeyFileError, match=r"^Invalid key 'k' in group '\[a\]'$"):
        kf.ensure_group_consumed("a")


def test_load(tmp_path: Path) -> None:
    path = tmp_path / "x.conf"
    path.write_bytes(b"[g]\nkey = value\n")
    assert KeyFile.load(path).get_string("g", "key") == "value"
    with pytest.raises(KeyFileError, match="Failed to open file"):
        KeyFile.load(tmp_path / "missing")
    path.write_bytes(b"[g]\nk=\xff\n")
    with pytest.raises(KeyFileError):
        KeyFile.load(path)

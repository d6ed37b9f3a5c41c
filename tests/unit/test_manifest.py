"""Tests of pyrauc.manifest: strict parsing, RAUC's messages, type derivation, serialisation."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest

from pyrauc.errors import ManifestError, RaucError
from pyrauc.manifest import Image, Manifest, derive_image_type

HASH = "931b44c2" + "0" * 48 + "deadbeef"
SALT = "ea12cb34" + "1" * 48 + "0000d285"
DIGEST_A = "101a4fc5" + "2" * 48 + "1234678d"
DIGEST_B = "a" * 64
KEY = bytes(range(32))

# The rauc.md example (a verity external manifest), completed.
EXAMPLE = f"""[update]
compatible=Test Config
version=2011.03-2

[bundle]
format=verity
verity-hash={HASH}
verity-salt={SALT}
verity-size=4096

[image.rootfs]
sha256={DIGEST_A}
size=8192
filename=rootfs.img

[image.appfs]
sha256={DIGEST_B}
size=30000
filename=appfs.img
""".encode()


def parse(text: str) -> Manifest:
    return Manifest.parse(text.encode())


def error_of(text: str) -> str:
    with pytest.raises(ManifestError) as exc:
        parse(text)
    assert isinstance(exc.value, RaucError)
    return str(exc.value)


def test_example_round_trips_exactly() -> None:
    mf = Manifest.parse(EXAMPLE)
    assert mf.compatible == "Test Config"
    assert mf.version == "2011.03-2"
    assert mf.bundle_format == "verity" and mf.format_explicit
    assert (mf.verity_hash, mf.verity_salt, mf.verity_size) == (HASH, SALT, 4096)
    assert [(i.slotclass, i.filename, i.size, i.sha256) for i in mf.images] == [
        ("rootfs", "rootfs.img", 8192, DIGEST_A),
        ("appfs", "appfs.img", 30000, DIGEST_B),
    ]
    mf.check_external()
    assert mf.to_data() == EXAMPLE
    assert mf.raw == EXAMPLE
    assert mf.hash() == hashlib.sha256(EXAMPLE).hexdigest()


def test_reordered_input_is_written_in_rauc_order() -> None:
    text = (
        "# comment\n[image.rootfs.var1]\ntype=ext4\nhooks=post-install;pre-install\nfilename=root.bin\n"
        "convert=tar-extract;\nadaptive=block-hash-index\nversion=legacy\n"
        "[meta.info]\nfoo-bar=a b\n[hooks]\nhooks=install-check\nfilename=hook.sh\n"
        "[handler]\nargs=--x\nfilename=h.sh\n[rollout]\nanything=1\n"
        "[bundle]\nverity-size=8192\nformat=crypt\ncrypt-key=" + KEY.hex() + "\n"
        "[update]\nbuild=b1\ndescription=d\nversion=v\ncompatible=c\n"
    )
    mf = parse(text)
    assert (
        mf.to_data()
        == (
            "[update]\ncompatible=c\nversion=v\ndescription=d\nbuild=b1\n\n"
            f"[bundle]\ncrypt-key={KEY.hex()}\nformat=crypt\nverity-size=8192\n\n"
            "[handler]\nfilename=h.sh\nargs=--x\n\n"
            "[hooks]\nfilename=hook.sh\nhooks=install-check;\n\n"
            "[image.rootfs.var1]\nfilename=root.bin\ntype=ext4\nhooks=pre-install;post-install;\n"
            "adaptive=block-hash-index;\nconvert=tar-extract;\n\n"
            "[meta.info]\nfoo-bar=a b\n"
        ).encode()
    )
    img = mf.images[0]
    assert (img.slotclass, img.variant, img.artifact) == ("rootfs", "var1", None)
    assert img.effective_type == "ext4" and not img.type_detected()
    assert mf.meta == {"info": {"foo-bar": "a b"}}
    assert mf.hooks == ["install-check"] and mf.hook_name == "hook.sh"


def test_plain_format_written_only_when_explicit() -> None:
    implicit = parse("[update]\ncompatible=x\n\n[image.a]\nfilename=a.img\n")
    assert implicit.bundle_format == "plain" and not implicit.format_explicit
    assert implicit.to_data() == b"[update]\ncompatible=x\n\n[image.a]\nfilename=a.img\n"
    explicit = parse("[update]\ncompatible=x\n[bundle]\nformat=plain\n")
    assert explicit.format_explicit
    assert explicit.to_data() == b"[update]\ncompatible=x\n\n[bundle]\nformat=plain\n"


def test_crypt_key_first_and_hidden() -> None:
    text = (
        f"[update]\ncompatible=x\n[bundle]\nformat=crypt\nverity-hash={HASH}\nverity-salt={SALT}\n"
        f"verity-size=4096\ncrypt-key={KEY.hex().upper()}\n[image.a]\nsha256={DIGEST_A}\nsize=1\nfilename=a.img\n"
    )
    mf = parse(text)
    assert mf.crypt_key == KEY
    assert mf.to_data().split(b"\n")[3:5] == [b"[bundle]", b"crypt-key=" + KEY.hex().encode()]
    mf.check_external()
    for text_form in (repr(mf), str(mf), f"{mf}"):
        assert KEY.hex() not in text_form.lower()
        assert "<hidden>" in text_form
    internal = dataclasses.replace(mf, verity_hash=None, verity_salt=None, verity_size=None)
    with pytest.raises(ManifestError, match=r"^Unexpected key for crypt bundle in internal manifest$"):
        internal.check_internal()
    dataclasses.replace(internal, crypt_key=None).check_internal()


def test_copy_and_replace_are_independent() -> None:
    mf = Manifest.parse(EXAMPLE)
    other = mf.copy()
    other.images[0].filename = "changed.img"
    assert mf.images[0].filename == "rootfs.img"
    replaced = dataclasses.replace(mf, version="3", raw=None)
    assert b"version=3\n" in replaced.to_data()
    assert replaced.hash() == hashlib.sha256(replaced.to_data()).hexdigest()


def test_set_string_escapes_in_output() -> None:
    mf = Manifest(compatible=" lead", description="a\nb")
    assert mf.to_data() == b"[update]\ncompatible=\\slead\ndescription=a\\nb\n"
    assert Manifest.parse(mf.to_data()).description == "a\nb"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[bundle]\nformat=plain\n", "Key file does not have group “update”"),
        ("[update]\nversion=1\n", "Key file does not have key “compatible” in group “update”"),
        ("[update]\ncompatible=\n", "Missing value for key 'compatible'"),
        ("[update]\ncompatible=x\nversion=\n", "Missing value for key 'version'"),
        ("[update]\ncompatible=x\nfoo=1\n", "Invalid key 'foo' in group '[update]'"),
        (
            "[update]\ncompatible=x\n[bundle]\nformat=squash\n",
            "Invalid format value 'squash' in group '[bundle]'",
        ),
        (
            "[update]\ncompatible=x\n[bundle]\nverity-hash=00\n",
            "Invalid key 'verity-hash' in group '[bundle]'",
        ),
        (
            "[update]\ncompatible=x\n[bundle]\nformat=verity\ncrypt-key=00\n",
            "Invalid key 'crypt-key' in group '[bundle]'",
        ),
        ("[update]\ncompatible=x\n[bundle]\nformat=crypt\ncrypt-key=00\n", "Invalid key for crypt bundle"),
        ("[update]\ncompatible=x\n[foo]\n", "Invalid group '[foo]'"),
        (
            "[update]\ncompatible=x\n[image.a]\nfilename=x/a.img\n",
            "Image filename x/a.img must not contain '/'",
        ),
        ("[update]\ncompatible=x\n[hooks]\nfilename=h\nhooks=foo\n", "install hook type 'foo' not supported"),
        (
            "[update]\ncompatible=x\n[hooks]\nfilename=h\n[image.a]\nfilename=a.img\nhooks=pre-install;bar\n",
            "slot hook type 'bar' not supported",
        ),
        (
            "[update]\ncompatible=x\n[image.a]\nfilename=a.img\nhooks=post-install\n",
            "Hooks used, but no hook 'filename' defined in [hooks] section",
        ),
        (
            "[update]\ncompatible=x\n[hooks]\nhooks=install-check\n",
            "Hooks used, but no hook 'filename' defined in [hooks] section",
        ),
        ("[update]\ncompatible=x\n[image.a]\nfilename=a.img\ntype=zip\n", "Unsupported image type 'zip'"),
        (
            "[update]\ncompatible=x\n[image.a]\nfilename=a.img\ntype=emptyfs\n",
            "It is not supported setting 'filename' when 'type=emptyfs' is set",
        ),
        (
            "[update]\ncompatible=x\n[handler]\nargs=--x\n",
            "Setting 'args' requires a full custom handler to be defined under 'filename' "
            "in group '[handler]'.",
        ),
        (
            "[update]\ncompatible=x\n[image.a]\nfilename=a.img\nsize=big\n",
            "Key “size” in group “image.a” has value",
        ),
        ("[update]\ncompatible=x\n[image.a]\nsha256=\nfilename=a.img\n", "Missing value for key 'sha256'"),
        (
            "[update]\ncompatible=x\n[image.a]\nfilename=a.img\nbogus=1\n",
            "Invalid key 'bogus' in group '[image.a]'",
        ),
        ("[update]\ncompatible=x\n[image.a]\n", "Missing required 'filename'"),
        ("compatible=x\n", "Key file does not start with a group"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    assert error_of(text).startswith(message)


def test_images_without_filename() -> None:
    mf = parse(
        "[update]\ncompatible=x\n[hooks]\nfilename=h.sh\n[image.a]\ntype=emptyfs\n[image.b]\nhooks=install\n"
    )
    assert mf.images[0].filename is None and mf.images[0].effective_type == "emptyfs"
    assert mf.images[1].hooks == ["install"]
    mf.check_input()
    mf.check_internal()


def test_artifacts_and_legacy_keys() -> None:
    mf = parse(
        "[update]\ncompatible=x\n[bundle]\nformat=verity\n"
        "[image.repo/app]\nfilename=app.tar\nversion=old\ndescription=old\nbuild=old\n"
    )
    img = mf.images[0]
    assert (img.slotclass, img.artifact, img.variant) == ("repo", "app", None)
    assert mf.to_data().endswith(b"[image.repo/app]\nfilename=app.tar\n")
    mf.check_input()
    plain = parse("[update]\ncompatible=x\n[image.repo/app]\nfilename=app.tar\n")
    with pytest.raises(ManifestError, match=r"^Artifacts are not supported in plain bundles$"):
        plain.check_input()
    conv = parse("[update]\ncompatible=x\n[image.a]\nfilename=a.tar\nconvert=tar-extract\n")
    with pytest.raises(ManifestError, match=r"^Image converters are not supported in plain bundles$"):
        conv.check_input()


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("root.ext4.caibx", "ext4-caibx"),
        ("root.vfat.caibx", "vfat-caibx"),
        ("root.ubifs.caibx", "ubifs-caibx"),
        ("root.img.caibx", "raw-caibx"),
        ("root.squashfs.caibx", "squashfs-caibx"),
        ("root.squashfs-xz.caibx", "squashfs-caibx"),
        ("root.catar", "catar"),
        ("root.caidx", "caidx"),
        ("root.tar", "tar"),
        ("root.tar.gz", "tar"),
        ("root.tar.ext4", "tar"),  # *.tar* comes before *.ext4
        ("root.tgz", "tar"),
        ("root.ext4", "ext4"),
        ("root.vfat", "vfat"),
        ("root.img", "raw"),
        ("root.squashfs-lz4", "squashfs"),
        ("root.squashfs", "squashfs"),
        ("root.ubifs", "ubifs"),
        ("root.img.gz", None),
        ("root.caibx", None),
        ("ext4", None),
    ],
)
def test_type_derivation_order(filename: str, expected: str | None) -> None:
    assert derive_image_type(filename) == expected
    img = Image(slotclass="rootfs", filename=filename)
    if expected is None:
        with pytest.raises(ManifestError, match="No 'type=' set and unable to map extension"):
            _ = img.effective_type
    else:
        assert img.effective_type == expected and img.type_detected()


def test_derived_type_not_written_back() -> None:
    mf = parse("[update]\ncompatible=x\n[image.a]\nfilename=a.ext4\n")
    assert mf.images[0].type is None and mf.images[0].effective_type == "ext4"
    assert b"type=" not in mf.to_data()


def test_check_input() -> None:
    base = "[update]\ncompatible=x\n[bundle]\nformat=verity\n[image.a]\nfilename=a.img\n"
    parse(base).check_input()
    unknown = parse("[update]\ncompatible=x\n[image.a]\nfilename=a.bin\n")  # parses (info/install)
    with pytest.raises(ManifestError) as exc:
        unknown.check_input()
    assert str(exc.value) == "No 'type=' set and unable to map extension of file 'a.bin' to known image type"
    parse(
        "[update]\ncompatible=x\n[hooks]\nfilename=h\n[image.a]\nfilename=a.bin\nhooks=install\n"
    ).check_input()
    with pytest.raises(ManifestError, match=r"^Unexpected digest for image a.img in input manifest$"):
        parse(base + f"sha256={DIGEST_A}\n").check_input()
    with pytest.raises(ManifestError, match=r"^Unexpected size 12 for image a.img in input manifest$"):
        parse(base + "size=12\n").check_input()
    with pytest.raises(ManifestError, match=r"^Unexpected verity hash for verity bundle in input manifest$"):
        parse(base + f"[bundle]\nverity-hash={HASH}\n").check_input()


def test_check_internal() -> None:
    good = f"[update]\ncompatible=x\n[image.a]\nfilename=a.img\nsha256={DIGEST_A}\nsize=5\n"
    parse(good).check_internal()
    with pytest.raises(ManifestError, match=r"^Missing digest for image a.img$"):
        parse("[update]\ncompatible=x\n[image.a]\nfilename=a.img\nsize=5\n").check_internal()
    with pytest.raises(ManifestError, match=r"^Invalid digest abc for image a.img$"):
        parse("[update]\ncompatible=x\n[image.a]\nfilename=a.img\nsha256=abc\nsize=5\n").check_internal()
    with pytest.raises(ManifestError, match=r"^Missing size for image a.img$"):
        parse(f"[update]\ncompatible=x\n[image.a]\nfilename=a.img\nsha256={DIGEST_A}\n").check_internal()
    with pytest.raises(
        ManifestError, match=r"^Unexpected verity hash for verity bundle in internal manifest$"
    ):
        parse(good + f"[bundle]\nformat=verity\nverity-hash={HASH}\n").check_internal()
    with pytest.raises(ManifestError, match=r"^Unexpected key for crypt bundle in internal manifest$"):
        parse(good + f"[bundle]\nformat=crypt\ncrypt-key={KEY.hex()}\n").check_internal()


def test_check_external() -> None:
    mf = Manifest.parse(EXAMPLE)
    mf.check_external()
    with pytest.raises(ManifestError, match=r"^Missing size for verity bundle$"):
        dataclasses.replace(mf, verity_size=0).check_external()
    with pytest.raises(ManifestError, match=r"^Unaligned size for verity bundle$"):
        dataclasses.replace(mf, verity_size=4097).check_external()
    crypt = dataclasses.replace(mf, bundle_format="crypt")
    with pytest.raises(ManifestError, match=r"^Missing key for crypt bundle$"):
        crypt.check_external()
    with pytest.raises(ManifestError, match=r"^Invalid key for crypt bundle$"):
        dataclasses.replace(crypt, crypt_key=b"short").check_external()
    dataclasses.replace(crypt, crypt_key=KEY).check_external()
    with pytest.raises(ManifestError, match=r"^Unsupported bundle format"):
        dataclasses.replace(mf, bundle_format="plain").check_external()


def test_min_rauc_version() -> None:
    base = "[update]\ncompatible=x\nmin-rauc-version="
    assert parse(base + "1.14\n").min_rauc_version == "1.14"
    parse(base + "1.15-rc1\n")
    assert error_of(base + "1.x\n") == (
        "Failed to parse 'min-rauc-version'. Expected 'Major[.Minor[.Patch]][-pre_release]]', got '1.x'"
    )
    assert error_of(base + "1.13.2\n") == (
        "Minimum RAUC version field in manifest is only supported since 1.14 (not '1.13.2')"
    )
    assert error_of(base + "99\n").startswith("Minimum RAUC version in manifest (99) is newer than current")


def test_meta_and_rollout() -> None:
    mf = parse("[update]\ncompatible=x\n[rollout]\nwhatever=1\n[meta.one]\nk=\\sv\n[meta.two]\nx-y=1\n")
    assert mf.meta == {"one": {"k": " v"}, "two": {"x-y": "1"}}
    assert mf.to_data() == b"[update]\ncompatible=x\n\n[meta.one]\nk=\\sv\n\n[meta.two]\nx-y=1\n"
    with pytest.raises(ManifestError):
        parse("[update]\ncompatible=x\n[meta.a.b]\nk=v\n")


def test_load(tmp_path: Path) -> None:
    path = tmp_path / "manifest.raucm"
    path.write_bytes(EXAMPLE)
    assert Manifest.load(path).to_data() == EXAMPLE
    with pytest.raises(ManifestError, match="Failed to open file"):
        Manifest.load(tmp_path / "missing")

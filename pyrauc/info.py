"""``rauc info`` output: readable, shell, json and json-pretty, as current RAUC prints them.

The crypt key is never shown: readable output prints ``'<hidden>'`` and the machine formats
leave it out, like RAUC.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from pyrauc.manifest import Manifest

if TYPE_CHECKING:    # the CLI checks --output-format against this module before it opens a bundle
    from pyrauc.bundle import Bundle

BOLD = "\033[1m"
YELLOW = "\033[33m"
GREEN = "\033[32m"
RESET = "\033[0m"

OUTPUT_FORMATS = ("readable", "shell", "json", "json-pretty", "json-2")


def _q(value: str | None) -> str:
    return "(null)" if value is None else value


def _image_fields(*fields: tuple[str, str | None]) -> list[str]:
    """The readable ``    Label:     value`` lines of an image, leaving out those whose value is None."""
    return [f"    {label + ':':<11}{value}" for label, value in fields if value is not None]


def format_readable(bundle: Bundle, *, color: bool = True, dump_cert: bool = False,
                    dump_recipients: bool = False) -> str:
    """The human-readable listing (``--output-format=readable``).

    ``dump_cert`` and ``dump_recipients`` add the signer certificate and the recipient list
    between the images and the certificate chain, where RAUC prints them.
    """
    from pyrauc import signature
    from pyrauc.bundle import format_size_long

    mf = bundle.manifest

    def hl(text: str, col: str) -> str:
        return f"{BOLD}{col}{text}{RESET}" if color else text

    lines = [
        f"Compatible:     '{mf.compatible}'",
        f"Version:        '{_q(mf.version)}'",
        f"Description:    '{_q(mf.description)}'",
        f"Build:          '{_q(mf.build)}'",
        f"Hooks:          '{' '.join(mf.hooks)}'",
    ]
    fmt = mf.bundle_format
    if fmt == "crypt":
        suffix = hl(" [encrypted CMS]", GREEN) if bundle.encrypted else hl(" [unencrypted CMS]", YELLOW)
        lines.append(f"Bundle Format:  {fmt}{suffix}")
        lines.append("  Crypt Key:    '<hidden>'")
    else:
        lines.append(f"Bundle Format:  {fmt}")
    if fmt in ("verity", "crypt"):
        lines.append(f"  Verity Salt:  '{mf.verity_salt}'")
        lines.append(f"  Verity Hash:  '{mf.verity_hash}'")
        lines.append(f"  Verity Size:  {mf.verity_size}")
    lines.append(f"Manifest Hash:  '{mf.hash()}'")
    lines.append("")
    if mf.meta:
        lines.append("Metadata:")
        for group, items in mf.meta.items():
            lines.append(f"  {group}:")
            for k, v in items.items():
                lines.append(f"    {k}: {v}")
        lines.append("")
    n = len(mf.images)
    lines.append(f"{n} Image{'' if n == 1 else 's'}{':' if n else ''}")
    for image in mf.images:
        lines.append(f"  {BOLD if color else ''}[{image.slotclass}]{RESET if color else ''}")
        lines += _image_fields(("Variant", image.variant or None), ("Artifact", image.artifact or None))
        lines += _image_fields(("Filename", image.filename or None)) or ["    (no image file)"]
        detected = " (detected)" if image.type is None else ""
        lines.append(f"    Type:      {image.effective_type}{detected}")
        lines += _image_fields(
            ("Checksum", image.sha256 or None),
            ("Size", format_size_long(image.size) if image.size is not None else None),
        )
        lines.append(f"    Hooks:     {' '.join(image.hooks)}")
        lines += _image_fields(
            ("Adaptive", " ".join(image.adaptive) if image.adaptive else None),
            ("Convert", " ".join(image.convert) if image.convert else None),
            ("Converted", " ".join(repr(c) for c in image.converted) if image.converted else None),
        )
    lines.append("")
    text = "\n".join(lines) + "\n" + _dumps(bundle, dump_cert, dump_recipients)
    if bundle.verified is None:
        return text + "Signature unverified\n"
    # RAUC prints the chain's text (which ends with a newline) with a newline of its own
    return text + "Certificate Chain:\n" + signature.format_cert_chain(bundle.verified.chain).rstrip("\n") + "\n\n"


def _dumps(bundle: Bundle, dump_cert: bool, dump_recipients: bool) -> str:
    """``--dump-cert`` and ``--dump-recipients``: after the manifest's text, in every output format."""
    from pyrauc import envelope, signature

    out = ""
    if dump_cert:
        certs = signature.cms_certificates(bundle.sigdata)
        signer = bundle.verified.signer if bundle.verified else (certs[0] if certs else None)
        if signer is not None:
            out += signature.dump_cert(signer).rstrip("\n") + "\n\n"
    if dump_recipients:
        if bundle.encrypted:
            # RAUC prints the block as is: key-identifier entries end without a newline
            out += envelope.format_recipients(bundle.cms) + "\n"
        else:
            out += "No recipient data to dump (bundle is not encrypted)\n\n"
    return out


def _shell_quote(value: str | None) -> str:
    if value is None:
        return "''"
    return "'" + value.replace("'", "'\\''") + "'" if value else "''"


def format_shell(bundle: Bundle) -> str:
    """``--output-format=shell``: RAUC_MF_* and RAUC_IMAGE_*_n variables."""
    mf = bundle.manifest
    out = [
        f"RAUC_MF_COMPATIBLE={_shell_quote(mf.compatible)}",
        f"RAUC_MF_VERSION={_shell_quote(mf.version)}",
        f"RAUC_MF_DESCRIPTION={_shell_quote(mf.description)}",
        f"RAUC_MF_BUILD={_shell_quote(mf.build)}",
        f"RAUC_MF_HASH={_shell_quote(mf.hash())}",
        f"RAUC_MF_FORMAT={_shell_quote(mf.bundle_format)}",
        f"RAUC_MF_IMAGES={len(mf.images)}",
        f"RAUC_MF_HOOKS={_shell_quote(' '.join(mf.hooks))}",
    ]
    for group, items in mf.meta.items():
        for k, v in items.items():
            name = f"RAUC_META_{group}_{k}".upper().replace("-", "_")
            out.append(f"{name}={shlex.quote(v)}")
    for i, image in enumerate(mf.images):
        out += [
            f"RAUC_IMAGE_NAME_{i}={_shell_quote(image.filename)}",
            f"RAUC_IMAGE_CLASS_{i}={_shell_quote(image.slotclass)}",
            f"RAUC_IMAGE_ARTIFACT_{i}={_shell_quote(image.artifact)}",
            f"RAUC_IMAGE_VARIANT_{i}={_shell_quote(image.variant)}",
            f"RAUC_IMAGE_DIGEST_{i}={_shell_quote(image.sha256)}",
            f"RAUC_IMAGE_SIZE_{i}={image.size if image.size is not None else 0}",
            f"RAUC_IMAGE_HOOKS_{i}={_shell_quote(' '.join(image.hooks))}",
        ]
        for name, values in (("ADAPTIVE", image.adaptive), ("CONVERT", image.convert),
                             ("CONVERTED", image.converted)):
            if values:
                out.append(f"RAUC_IMAGE_{name}_{i}={_shell_quote(' '.join(values))}")
    return "\n".join(out) + "\n\n"          # RAUC prints the text (ending in a newline) with one more


def to_json_obj(mf: Manifest) -> dict[str, Any]:
    """The object RAUC's json/json-pretty formats print."""
    images = []
    for image in mf.images:
        entry: dict[str, Any] = {
            "artifact": image.artifact,
            "variant": image.variant,
            "filename": image.filename,
            "type": image.effective_type,
            "checksum": image.sha256,
            "size": image.size,
            "hooks": list(image.hooks),
            "adaptive": list(image.adaptive),
        }
        if image.convert:
            entry["convert"] = list(image.convert)
        if image.converted:
            entry["converted"] = list(image.converted)
        images.append({image.slotclass: entry})
    obj: dict[str, Any] = {
        "compatible": mf.compatible,
        "version": mf.version,
        "description": mf.description,
        "build": mf.build,
        "format": mf.bundle_format,
        "hooks": list(mf.hooks),
        "hash": mf.hash(),
    }
    if mf.meta:
        obj["meta"] = mf.meta
    obj["images"] = images
    return obj


def to_dict(mf: Manifest) -> dict[str, Any]:
    """The manifest as RAUC's dictionary (D-Bus InspectBundle's ``info``, ``--output-format=json-2``).

    Keys appear only when set, except ``hooks`` of an image and ``meta``; the crypt key is left out.
    """
    update = {k: v for k, v in (("compatible", mf.compatible), ("version", mf.version),
                                ("description", mf.description), ("build", mf.build)) if v is not None}
    bundle: dict[str, Any] = {"format": mf.bundle_format}
    if mf.bundle_format != "plain":
        bundle.update({"verity-hash": mf.verity_hash, "verity-salt": mf.verity_salt, "verity-size": mf.verity_size})
    result: dict[str, Any] = {"manifest-hash": mf.hash(), "update": update, "bundle": bundle}
    if mf.hook_name:
        result["hooks"] = {"filename": mf.hook_name, "hooks": list(mf.hooks)}
    if mf.handler_name:
        result["handler"] = {"filename": mf.handler_name, **({"args": mf.handler_args} if mf.handler_args else {})}
    images = []
    for image in mf.images:
        entry: dict[str, Any] = {"slot-class": image.slotclass}
        for key, value in (("artifact", image.artifact), ("variant", image.variant), ("filename", image.filename),
                           ("type", image.effective_type), ("checksum", image.sha256), ("size", image.size)):
            if value is not None:
                entry[key] = value
        entry["hooks"] = list(image.hooks)
        for key, values in (("adaptive", image.adaptive), ("convert", image.convert),
                            ("converted", image.converted)):
            if values:
                entry[key] = list(values)
        images.append(entry)
    result["images"] = images
    result["meta"] = {group: dict(items) for group, items in mf.meta.items()}
    return result


def json_glib(value: Any) -> str:
    """JSON as json-glib's generator writes it: no spaces, UTF-8 as is (RAUC's ``json``)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def json_glib_pretty(value: Any, indent: int = 0, *, empty: tuple[str, str] = ("{ }", "[ ]")) -> str:
    """JSON as json-glib's pretty generator writes it: 2-space indent, ``"key" : value``, UTF-8 as
    is. ``empty``: how an empty object and array print (json-2's GVariant: ``{ }``/``[ ]``;
    ``json-pretty``'s builder: ``{}``/``[]``)."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return empty[0]
        body = ",\n".join(f"{pad}{json_glib(k)} : {json_glib_pretty(v, indent + 1, empty=empty)}"
                          for k, v in value.items())
        return "{\n" + body + "\n" + "  " * indent + "}"
    if isinstance(value, list):
        if not value:
            return empty[1]
        body = ",\n".join(pad + json_glib_pretty(v, indent + 1, empty=empty) for v in value)
        return "[\n" + body + "\n" + "  " * indent + "]"
    return json_glib(value)


JSON_PRETTY_EMPTY = ("{}", "[]")


def format_info(bundle: Bundle, output_format: str, *, color: bool = True, dump_cert: bool = False,
                dump_recipients: bool = False) -> str:
    """Render ``bundle`` in one of :data:`OUTPUT_FORMATS`."""
    if output_format == "readable":
        return format_readable(bundle, color=color, dump_cert=dump_cert, dump_recipients=dump_recipients)
    if output_format == "shell":
        text = format_shell(bundle)
    elif output_format == "json":
        text = json_glib(to_json_obj(bundle.manifest)) + "\n"
    elif output_format == "json-pretty":
        text = json_glib_pretty(to_json_obj(bundle.manifest), empty=JSON_PRETTY_EMPTY) + "\n"
    elif output_format == "json-2":
        text = json_glib_pretty(to_dict(bundle.manifest)) + "\n"
    else:
        raise ValueError(output_format)
    return text + _dumps(bundle, dump_cert, dump_recipients)

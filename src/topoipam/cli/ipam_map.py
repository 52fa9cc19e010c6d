"""``topoipam ipam map -o FILE.html|FILE.svg [--by LABEL]``: a picture of the address space.

The data comes from ``ipam.addrmap`` (one read), the picture from ``core.addrmap``
(pure). The format follows the file's extension; the file is written to a
temporary file beside it and renamed into place, so a failed run leaves no
partial map (and an existing map untouched). ``register`` adds the sub-command to
the ``ipam`` command of ``cli.ipam`` (registered before this module).
"""

from __future__ import annotations

import os

from topoipam.errors import TopoipamError, ValidationError

FORMATS = {".html": "html", ".htm": "html", ".svg": "svg"}


def register(subparsers) -> None:
    from topoipam.cli.ipam import ipam_subcommands

    sub = ipam_subcommands(subparsers, "topoipam.cli.ipam_map")
    p = sub.add_parser("map", help="Draw the address space: each pool a grid of its blocks, coloured by the "
                       "rack (--by LABEL) or node holding them, shaded by use; borrowed and reserved addresses "
                       "marked; details on hover.",
                       description="topoipam ipam map -o FILE.html|FILE.svg [--by LABEL]. One self-contained "
                                   "file (no network fetch); the format follows the extension.")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write: .html, .htm or .svg")
    p.add_argument("--by", metavar="LABEL", help="colour blocks by this label of the node holding them "
                   "(default: by node)")
    p.set_defaults(run=run_map)


def output_format(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValidationError(f"cannot tell the map's format from {path!r}: the file name must end in .html, "
                              ".htm or .svg")
    return FORMATS[ext]


def run_map(args, ctx) -> int:
    from topoipam.cli.progress import progress_for

    kind = output_format(args.output)  # before anything is read
    if args.by is not None and not args.by.strip():
        raise ValidationError("--by needs a label name")
    directory = os.path.dirname(os.path.abspath(args.output))
    if os.path.isdir(args.output):
        raise ValidationError(f"cannot write the map to {args.output}: it is a directory")
    if not os.path.isdir(directory):
        raise ValidationError(f"cannot write the map to {args.output}: directory {directory} does not exist")
    from topoipam.core.addrmap import render_html, render_svg
    from topoipam.ipam.addrmap import address_map

    with progress_for(ctx, "map: reading blocks") as bar:
        pools = address_map(ctx.store, args.by, progress=bar.update)
        bar.stage("map: drawing")
        render = render_html if kind == "html" else render_svg
        text = render(pools, label=args.by or "")
    _write_whole(args.output, text)
    blocks = sum(len(p.blocks) for p in pools)
    print(f"Wrote the address map ({len(pools)} pool grid(s), {blocks} claimed block(s)) to {args.output}",
          file=ctx.out)
    return 0


def _write_whole(path: str, text: str) -> None:
    """Write ``text`` to ``path`` all or nothing (temporary file in the same directory, then rename)."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".topoipam-map-", dir=directory)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary file would be (mkstemp makes it 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise TopoipamError(f"cannot write the map to {path}: {err.strerror or err}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)

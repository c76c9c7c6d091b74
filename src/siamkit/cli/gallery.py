"""``siamkit enroll``, ``identify`` and ``remove``: a gallery of reference embeddings."""

from __future__ import annotations

import argparse
from typing import Any

from .common import (
    CommandError,
    add_command,
    add_json,
    add_progress,
    emit,
    finite_float,
    json_object,
    positive_int,
    progress_bars,
    show_progress,
)

__all__ = ["add_commands", "GALLERY_HELP"]

GALLERY_HELP = ("gallery folder, or postgresql://USER@HOST[:PORT]/DATABASE shared by "
                "replicas (the password from PGPASSWORD or ~/.pgpass, not the command line)")


def add_commands(sub: Any) -> None:
    """Register ``enroll``, ``identify`` and ``remove``."""
    _add_enroll(sub)
    _add_identify(sub)
    r = add_command(sub, "remove", "remove a class and all its references from a gallery")
    r.add_argument("--model", required=True, help="run folder of the gallery's model")
    r.add_argument("--gallery", required=True, help=GALLERY_HELP)
    r.add_argument("--label", required=True, help="class label to remove")
    add_json(r)
    r.set_defaults(handler=remove)


def _add_enroll(sub: Any) -> None:
    e = add_command(sub, "enroll", "add classes to a gallery (created if missing)")
    e.add_argument("--model", required=True, help="run folder of a trained model")
    e.add_argument("--gallery", required=True, help=GALLERY_HELP)
    e.add_argument("--label", help="class label of FILE...")
    e.add_argument("files", nargs="*", metavar="FILE",
                   help="reference images of --label (texts, for a text model; JSON rows "
                        "'{\"column\": value}', for a table model)")
    e.add_argument("--from-folder", help="enroll a folder-per-class tree (class = folder), "
                                         "or the table file of a table model")
    e.add_argument("--shots", type=positive_int, default=None,
                   help="with --from-folder: the first N images (by name) of each class "
                        "(default: all)")
    e.add_argument("--allow-duplicates", action="store_true",
                   help="with --from-folder: enroll references the gallery already holds "
                        "(same label and embedding) again, instead of skipping them")
    e.add_argument("--class-score", choices=("nearest", "prototype"), default="nearest",
                   help="new gallery: a class scores as its nearest reference or its mean")
    add_progress(e)
    add_json(e)
    e.set_defaults(handler=enroll)


def _add_identify(sub: Any) -> None:
    i = add_command(sub, "identify", "rank gallery classes for query images")
    i.add_argument("--model", required=True, help="run folder of the gallery's model")
    i.add_argument("--gallery", required=True, help=GALLERY_HELP)
    i.add_argument("files", nargs="+", metavar="FILE",
                   help="query images (texts, for a text model; JSON rows, for a table "
                        "model)")
    i.add_argument("--k", type=int, default=5, help="classes to list per query")
    i.add_argument("--threshold", type=finite_float, default=None,
                   help="open-set threshold (default: the model's calibrated one)")
    i.add_argument("--backend", choices=("exact", "faiss"), default=None,
                   help="search backend (default: the gallery's)")
    i.add_argument("--index-args", default=None, metavar="JSON",
                   help='backend options, e.g. \'{"kind": "hnsw", "m": 32, "ef_search": 64}\' '
                        'or \'{"kind": "ivf", "nlist": 1024, "nprobe": 16}\' '
                        "(default: the gallery's)")
    add_json(i)
    i.set_defaults(handler=identify)


def enroll(args: argparse.Namespace) -> int:
    """Enroll files of one class, or a whole folder (table); everything is read, checked
    and embedded before a gallery is created, so a failed enroll leaves none behind."""
    from ..checkpoint import load_model, model_identity
    from ..gallery import check_label
    from ..inference import embed_references, open_model_gallery
    from ..inputs import adapter_for

    model, _, _ = load_model(args.model)
    if args.from_folder and (args.files or args.label):
        raise CommandError("give either --label with files, or --from-folder")
    if not args.from_folder and not (args.label and args.files):
        raise CommandError("enroll needs --label NAME FILE... or --from-folder FOLDER")
    if args.from_folder:
        with progress_bars(show_progress(args)) as progress:
            labels, emb = embed_references(model, args.from_folder, args.shots, progress)
    else:
        check_label(args.label)
        emb = adapter_for(model.input_spec).embed_arguments(model, args.files)
    gallery = open_model_gallery(model, model_identity(args.model), args.gallery, create=True,
                                 class_score=args.class_score)
    if args.from_folder:
        done = gallery.enroll_many(labels, emb, skip_duplicates=not args.allow_duplicates)
    else:
        done = gallery.enroll(args.label, emb, sources=[x[:200] for x in args.files])
    res = {"added": done.added, "skipped": done.skipped, "classes": len(gallery.labels()),
           "references": len(gallery), "gallery": gallery.url}
    skipped = f" ({done.skipped} already there skipped)" if done.skipped else ""
    emit(res, args.json, f"enrolled {done.added} references{skipped}; the gallery has "
                         f"{res['classes']} classes, {res['references']} references")
    return 0


def identify(args: argparse.Namespace) -> int:
    """Rank the gallery's classes for each query, with the open-set decision."""
    from ..checkpoint import load_model, model_identity, threshold_of
    from ..inference import identify_results, open_model_gallery
    from ..inputs import adapter_for

    model, _, card = load_model(args.model)
    gallery = open_model_gallery(model, model_identity(args.model), args.gallery,
                                 backend=args.backend,
                                 backend_args=json_object(args.index_args, "--index-args"))
    threshold = args.threshold if args.threshold is not None else threshold_of(card)
    emb = adapter_for(model.input_spec).embed_arguments(model, args.files)
    results = identify_results(gallery, args.files, emb, args.k, threshold)
    res = {"threshold": threshold, "higher_is_closer": gallery.higher_is_closer,
           "results": results}
    lines = [f"{r['file']}: {r['decision']}" + (f" ({r['matches'][0]['score']:.4g})"
                                                 if r["matches"] else "") for r in results]
    if threshold is None:
        lines.append("(no calibrated threshold: closed-set answers; run siamkit calibrate)")
    emit(res, args.json, "\n".join(lines))
    return 0


def remove(args: argparse.Namespace) -> int:
    """Remove one class from a gallery."""
    from ..checkpoint import model_identity
    from ..gallery import Gallery, GalleryError

    gallery = Gallery.open(args.gallery, model_id=model_identity(args.model))
    try:
        removed = gallery.remove(args.label)
    except KeyError:
        raise GalleryError(f"no class {args.label!r} in {gallery.url}") from None
    res = {"label": args.label, "removed": removed, "classes": len(gallery.labels()),
           "references": len(gallery), "gallery": gallery.url}
    emit(res, args.json, f"removed class {args.label!r} ({removed} references); the gallery "
                         f"has {res['classes']} classes, {res['references']} references")
    return 0

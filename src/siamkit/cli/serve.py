"""``siamkit serve``: the HTTP service (:mod:`siamkit.serve`)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_command, port_number, positive_float, positive_int
from .gallery import GALLERY_HELP

__all__ = ["add_serve"]


def add_serve(sub: Any) -> None:
    """Register ``serve``."""
    s = add_command(sub, "serve", "HTTP service: embed, verify, identify, enroll (FastAPI)")
    s.add_argument("--model", required=True, help="run folder of a trained model")
    s.add_argument("--gallery", required=True,
                   help=GALLERY_HELP + "; created if missing")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (127.0.0.1: this machine only)")
    s.add_argument("--port", type=port_number, default=8000,
                   help="port to listen on (0: any free port, named in the log)")
    s.add_argument("--api-key-file", help="file holding the API key (default: "
                                          "$SIAMKIT_API_KEY)")
    s.add_argument("--admin-key-file", help="file holding the key for enroll and delete "
                                            "(default: $SIAMKIT_ADMIN_KEY; none: the API key)")
    s.add_argument("--no-auth", action="store_true",
                   help="serve without a key (local tests; loopback addresses only)")
    s.add_argument("--max-body-mb", type=positive_float, default=32,
                   help="request body limit (MiB)")
    s.add_argument("--max-pixels", type=positive_int, default=4_000_000,
                   help="answer 400 to images with more pixels, read from their header "
                        "before decoding (bounds the CPU a request costs)")
    s.add_argument("--image-formats", default="png,jpeg,bmp,tiff,gif,webp,ppm",
                   help="image formats accepted (others get a 400)")
    s.add_argument("--max-files", type=positive_int, default=64,
                   help="files (or texts) per request")
    s.add_argument("--max-text-chars", type=positive_int, default=10_000,
                   help="longest text accepted (text models)")
    s.add_argument("--engine", choices=("auto", "torch", "onnx"), default=None,
                   help="where the encoder runs: onnx (ONNX Runtime, exported once and checked "
                        "against PyTorch at start-up), torch, or auto: onnx when the onnx "
                        "extra is installed (default: $SIAMKIT_ENGINE, else auto)")
    s.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                   help="the torch engine's precision; auto: bf16 where the CPU computes "
                        "it natively (default: $SIAMKIT_PRECISION, else auto)")
    s.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    """Start the service (blocks)."""
    from ..data.images import check_formats
    from ..serve import ServeSettings, run

    settings = ServeSettings(max_body_bytes=int(args.max_body_mb * 2**20),
                             max_pixels=args.max_pixels, max_files=args.max_files,
                             max_text_chars=args.max_text_chars,
                             image_formats=check_formats(args.image_formats),
                             engine=args.engine, precision=args.precision)
    run(args.model, args.gallery, args.host, args.port, args.api_key_file,
        args.admin_key_file, args.no_auth, settings)
    return 0

"""Training speed with and without ``optim.keep_freed_memory``, side by side in one run.

glibc returns blocks of 32 MB and more to the system at every free, so each training step
faults its largest activations back in (``siamkit.allocator``). Each round trains a config
for ``--steps`` steps twice, in fresh processes (the setting holds for the rest of a
process), once each way, in alternating order; the table gives each round's images/s, the
median ratio and each process's peak resident memory. Steps take the same arithmetic
either way; the final losses are compared to show it.

    python benchmarks/train_memory.py                                  # the demo preset
    python benchmarks/train_memory.py --config configs/omniglot.yaml --rounds 3 \\
        --out benchmarks/results/train_memory.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(config: str, steps: int, keep: bool, out: Path, overrides: list[str]) -> dict:
    """Train ``steps`` steps in this process: images/s over the steps after the first 5
    (timed between steps, so neither loading nor validation counts), peak memory and the
    last loss."""
    import time

    from siamkit.config import load_config
    from siamkit.training import train

    cfg = load_config(config, [*overrides, f"optim.steps={steps}", f"eval.every={steps}",
                               "eval.episodes=20", "optim.time_limit_minutes=null",
                               "eval.calibrate_on=none",
                               f"optim.keep_freed_memory={str(keep).lower()}"])
    stamps: list[float] = []
    res = train(cfg, out, overwrite=True,
                callbacks=[lambda step, loss: stamps.append(time.perf_counter())])  # None: go on
    per_step = cfg.optim.p * cfg.optim.k
    return {"images_per_second": per_step * (len(stamps) - 6) / (stamps[-1] - stamps[5]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "last_loss": res.history[-1]["loss"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "src/siamkit/presets/omniglot_demo.yaml"))
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", choices=["keep", "return"], help=argparse.SUPPRESS)
    p.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.config, args.steps, args.child == "keep", args.run_dir,
                               args.overrides)))
        return 0
    from siamkit.machine import describe

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ("keep", "return") if r % 2 == 0 else ("return", "keep")
            row = {"round": r + 1}
            for how in order:
                cmd = [sys.executable, __file__, "--child", how, "--config", args.config,
                       "--steps", str(args.steps), "--run-dir", str(Path(tmp) / how)]
                cmd += [a for o in args.overrides for a in ("--set", o)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.stderr.write(done.stderr)
                    return done.returncode
                row[how] = json.loads(done.stdout.strip().splitlines()[-1])
            row["ratio"] = row["keep"]["images_per_second"] / row["return"]["images_per_second"]
            rows.append(row)
            print(f"round {r + 1}: kept {row['keep']['images_per_second']:.0f} images/s "
                  f"({row['keep']['peak_rss_mb']:.0f} MB), returned "
                  f"{row['return']['images_per_second']:.0f} images/s "
                  f"({row['return']['peak_rss_mb']:.0f} MB): {row['ratio']:.2f}x", flush=True)
    ratio = statistics.median(r["ratio"] for r in rows)
    same = all(r["keep"]["last_loss"] == r["return"]["last_loss"] for r in rows)
    print(f"median ratio {ratio:.2f}x over {len(rows)} rounds; the same last loss either way: "
          f"{same}")
    if args.out:
        report = {"config": args.config, "overrides": args.overrides, "steps": args.steps,
                  "rounds": rows, "median_ratio": ratio, "same_last_loss": same,
                  "command": " ".join(["python", "benchmarks/train_memory.py",
                                       *(argv if argv is not None else sys.argv[1:])]),
                  "measured": date.today().isoformat(), "machine": describe()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

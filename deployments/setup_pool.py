"""Create the `hpo` work pool, its `gpu` and `cpu` queues, the trial and the sweep deployments, idempotently.

    PREFECT_API_URL=http://host:4200/api python deployments/setup_pool.py [--pool hpo] [--gpu-limit 1]
        [--project-dir DIR]

Workers start every flow run in the project folder (default: this repository's root, whose flows/ holds
the examples' training code): it must exist at the same path on every worker machine and hold (or have
installed) the package of each sweep's training function. The flows themselves are imported from the
installed prefect_hpo. See deployments/README.md.

Then start a worker per queue on the machines that have the resources:

    prefect worker start --pool hpo --work-queue gpu
    prefect worker start --pool hpo --work-queue cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect_hpo.deploy import setup_work_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pool", default="hpo")
    parser.add_argument("--gpu-limit", type=int, default=1, help="concurrency limit of the gpu queue")
    parser.add_argument(
        "--project-dir",
        default=str(Path(__file__).resolve().parents[1]),
        help="the folder workers run flow runs from: holds the training code (default: %(default)s)",
    )
    args = parser.parse_args()
    deployment = setup_work_pool(args.project_dir, pool=args.pool, queues={"gpu": args.gpu_limit, "cpu": None})
    print(f"pool {args.pool!r} with queues gpu, cpu; deployments hpo-trial/hpo-trial ({deployment})")
    print("and hpo-run-sweep/hpo-sweep")


if __name__ == "__main__":
    main()

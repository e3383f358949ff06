"""Evidence variants of the backgrounds-alone test, for ``diag_recalibrate.py --variants``.

Two ways to build one:

* ``--hybrid PLAIN GROWN --out FILE``: records of an audit with the masks as they are (PLAIN, comma-separated files) whose
  background reliance (``background_reliance``, ``reliance_ci_low``, ``reliance_ci_high``) is replaced by that of an
  audit with every mask grown (GROWN, ``--set verdicts.estimated_mask_background_dilation=1``): the verdict that
  ``verdicts.background_test_dilation`` gives. Both audits draw the same donors and resamples (the growth draws nothing),
  so this is the shipped rule exactly; checked against a fresh audit at stop 33 (60 of 60 verdicts equal).
* ``--ungrown FILES --out FILE``: records of an audit with ``background_test_dilation`` > 0, with the reliance the test
  had with the masks as they are (``ungrown_background_reliance`` ...) put back: the verdicts without the growth.

    python background_test_variants.py --hybrid proving_ground_evidence_r12_r15_sam.json proving_ground_evidence_r12_r15_sam_dilation1.json --out grown.json
    python background_test_variants.py --ungrown proving_ground_evidence_calibration_sam_r33.json --out ungrown.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _common import load_records, record_key

FIELDS = ("background_reliance", "reliance_ci_low", "reliance_ci_high")
UNGROWN = ("ungrown_background_reliance", "ungrown_reliance_ci_low", "ungrown_reliance_ci_high")


def hybrid(plain: list[dict], grown: list[dict]) -> list[dict]:
    """``plain``'s records with ``grown``'s background reliance (records missing from ``grown`` are dropped)."""
    by_key = {record_key(r): r for r in grown}
    return [{**r, **{f: by_key[record_key(r)][f] for f in FIELDS}} for r in plain if record_key(r) in by_key]


def ungrown(records: list[dict]) -> list[dict]:
    """The records with the background reliance measured on the masks as they are."""
    missing = [r for r in records if UNGROWN[0] not in r]
    if missing:
        raise SystemExit(f"{len(missing)} records have no {UNGROWN[0]}: audited before stop 33")
    return [{**r, **{f: r[u] for f, u in zip(FIELDS, UNGROWN)}} for r in records]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hybrid", nargs=2, metavar=("PLAIN", "GROWN"), help="comma-separated evidence files each")
    parser.add_argument("--ungrown", help="comma-separated evidence files audited with background_test_dilation > 0")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if bool(args.hybrid) == bool(args.ungrown):
        parser.error("give --hybrid or --ungrown")
    if args.hybrid:
        records = hybrid(load_records(args.hybrid[0].split(",")), load_records(args.hybrid[1].split(",")))
    else:
        records = ungrown(load_records(args.ungrown.split(",")))
    Path(args.out).write_text(json.dumps({"records": records}))
    print(f"{len(records)} records -> {args.out}")


if __name__ == "__main__":
    main()

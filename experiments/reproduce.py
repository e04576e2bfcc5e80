"""Reproduce the seed papers' headline claims at a scale that runs here, and write
``REPRODUCTION.md`` (generated, never edited by hand).

    python experiments/reproduce.py --paper ddim            # one paper's small experiment
    python experiments/reproduce.py --paper ddim --seeds 3  # with the spread over 3 seeds
    python experiments/reproduce.py --all --scale small     # every runnable one, then the file
    python experiments/reproduce.py --render                # the file from the saved results
    python experiments/reproduce.py --paper edm --tiny      # seconds (the test suite's form)

Papers whose experiment is an existing script (few-step toys, guidance on digits, the GAN,
Cold Diffusion, Video and ELS experiments) are read from that script's saved results, with
the script's command and date in the row; ``--rerun-scripts`` runs those scripts first.
``--scale full`` lists the full-scale recipe commands (they need the papers' data sets and
accelerators, so they are printed, not run). Each run's result is saved under
``experiments/results/reproduce/<paper>.json`` with the command, the commit and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reproduction.papers import PAPERS, RESULTS, ROOT  # noqa: E402

SAVED = RESULTS / "reproduce"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_paper(name: str, *, seeds: int = 1, tiny: bool = False, out_dir: Path = SAVED) -> dict:
    """Run (or read) one paper's small-scale experiment and save its result.

    Returns:
      The saved record: ``paper``, ``command``, ``commit``, ``date``, ``seconds``, ``kind``
      and the experiment's ``rows``, ``measured``, ``verdict`` and ``why``.

    Raises:
      ValueError: an unknown paper name (the message lists them).
    """
    if name not in PAPERS:
        raise ValueError(f"unknown --paper {name!r}; expected one of {sorted(PAPERS)}")
    entry = PAPERS[name]
    small = entry.get("small")
    t0 = time.time()
    if small is None:
        rec = {"kind": "not testable here", "rows": [], "measured": "",
               "verdict": "not testable here", "why": entry["why_not"],
               "command": "", "source_date": ""}
    elif small[0] == "fn":
        fn = small[1]
        runs = [fn(tiny=tiny, seed=s) for s in range(seeds)]
        verdicts = [r["verdict"] for r in runs]
        agree = sum(v == "agrees" for v in verdicts)
        verdict = verdicts[0] if len(set(verdicts)) == 1 else f"mixed ({agree}/{seeds} agree)"
        cmd = f"python experiments/reproduce.py --paper {name}" + (
            f" --seeds {seeds}" if seeds > 1 else "") + (" --tiny" if tiny else "")
        rec = {"kind": "small experiment", "rows": runs[0]["rows"],
               "measured": runs[0]["measured"] + (
                   "" if seeds == 1 else f" [seed 0 of {seeds}; verdicts: {verdicts}]"),
               "per_seed": [r["measured"] for r in runs], "verdict": verdict,
               "why": runs[0]["why"], "command": cmd, "seeds": seeds, "tiny": tiny,
               "source_date": ""}
    else:
        _, fname, reader = small
        path = RESULTS / fname
        cmd = entry["command"]
        if not path.exists():
            rec = {"kind": "script", "rows": [], "measured": "",
                   "verdict": "not run yet", "why": f"{cmd} has not written "
                   f"experiments/results/{fname} yet", "command": cmd, "source_date": ""}
        else:
            data = json.loads(path.read_text())
            if reader is None:  # the script states its own verdict
                rec = {"rows": data.get("reproduction_rows", []),
                       "measured": data.get("measured", f"see experiments/results/"
                                                        f"{fname.replace('.json', '.md')}"),
                       "verdict": data.get("verdict", "see results"),
                       "why": data.get("why", "")}
            else:
                rec = reader(data)
            rec.update(kind="script", command=cmd, source=f"experiments/results/{fname}",
                       source_date=str(data.get("date", "")))
    rec.update(paper=name, commit=_commit(), seconds=round(time.time() - t0, 1),
               date=datetime.date.today().isoformat())
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(rec, indent=1, default=str))
    return rec


def _table(rows: list) -> list:
    if not rows:
        return []
    keys = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    out += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
    return out


def render(saved: Path = SAVED, target: Path = ROOT / "REPRODUCTION.md") -> str:
    """Write ``REPRODUCTION.md`` from :data:`PAPERS` and the saved results."""
    lines = ["# Reproduction of the seed papers", "",
             "Generated by `python experiments/reproduce.py --render` (`--all --scale small` "
             "runs the small experiments first); do not edit by hand. Each section: the "
             "paper's claim, its number(s), our small-scale measurement with the command, "
             "commit and date that produced it, whether the claim's direction reproduces, and "
             "the full-scale recipe. Small-scale numbers are on 2-D mixtures, exact denoisers "
             "or 8x8 digits: they test the claim's direction, never the paper's number.", "",
             "| paper | verdict | measured here |", "|---|---|---|"]
    body = []
    for name, e in PAPERS.items():
        f = saved / f"{name}.json"
        rec = json.loads(f.read_text()) if f.exists() else None
        verdict = rec["verdict"] if rec else "not run yet"
        short = (rec or {}).get("measured", "") or (rec or {}).get("why", "")
        m = re.match(r"^(.*?\d{4})", e["title"])
        short = short.split(" [seed")[0]
        lines.append(f"| [{m.group(1) if m else e['title']}](#{name}) | {verdict} | "
                     f"{short[:140]}{'...' if len(short) > 140 else ''} |")
        body += ["", f"## <a id=\"{name}\"></a>{e['title']}", "",
                 f"- **Claim**: {e['claim']}", f"- **Paper**: {e['paper']}"]
        if rec is None:
            body.append(f"- **Here**: not run yet: `python experiments/reproduce.py --paper "
                        f"{name}`")
        else:
            body.append(f"- **Verdict**: {rec['verdict']}. {rec.get('why', '')}")
            if rec.get("measured"):
                body.append(f"- **Measured**: {rec['measured']}")
            if rec.get("command"):
                src = f"; results {rec['source']} of {rec['source_date']}" \
                    if rec.get("source") else ""
                body.append(f"- **Command**: `{rec['command']}` (commit {rec['commit']}, "
                            f"{rec['date']}{src})")
            if rec.get("rows"):
                body += [""] + _table(rec["rows"])
        body.append(f"- **Full scale**: {e['full']}")
    text = "\n".join(lines + body) + "\n"
    target.write_text(text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paper", action="append", default=[], help="a paper (repeatable): "
                    + ", ".join(PAPERS))
    ap.add_argument("--all", action="store_true", help="every paper, then REPRODUCTION.md")
    ap.add_argument("--render", action="store_true", help="only write REPRODUCTION.md")
    ap.add_argument("--scale", choices=("small", "full"), default="small")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--tiny", action="store_true", help="seconds-long versions (tests)")
    ap.add_argument("--rerun-scripts", action="store_true",
                    help="run the experiment scripts whose results the rows read")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error(f"--seeds must be >= 1; got {args.seeds}")
    names = list(PAPERS) if args.all else args.paper
    unknown = [n for n in names if n not in PAPERS]
    if unknown:
        ap.error(f"unknown --paper {unknown}; expected some of {sorted(PAPERS)}")
    if args.scale == "full":
        for n in names:
            print(f"{n}: {PAPERS[n]['full']}")
        return 0
    if not args.render:
        if args.rerun_scripts:
            for cmd in dict.fromkeys(PAPERS[n].get("command") for n in names):
                if cmd:
                    print("+", cmd, flush=True)
                    subprocess.run(cmd.split(), cwd=ROOT, check=True)
        for n in names:
            rec = run_paper(n, seeds=args.seeds, tiny=args.tiny)
            print(f"{n}: {rec['verdict']} | {rec['measured'] or rec['why']} "
                  f"({rec['seconds']} s)", flush=True)
    if args.render or args.all:
        render()
        print(f"wrote {ROOT / 'REPRODUCTION.md'}")
    if not names and not args.render:
        ap.error("give --paper NAME, --all or --render")
    return 0


if __name__ == "__main__":
    sys.exit(main())

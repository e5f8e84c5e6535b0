"""Peak memory and wall time of the splits, reports and exports (flows.outputs.write_outputs) as
the number of rows grows: the streaming path should hold only small per-row records, so its peak
RSS should barely move between 10k and 100k respond rows.

It synthesises a run folder per size through ShardStore.write_shard with the contract schemas:
`taxonomy` and `respond` rows for every seed (prompts about 600 characters, responses about
1,500, one to nine constraints and scores each; one in ten below full score), `dpo` rows for a
quarter of the full-score rows, `iopo` rows (x2 = x1 plus a constraint) for another quarter,
pair-stage rejects for the rest, and about 1% exact and 1% near duplicate prompts. Then it runs write_outputs in a fresh process (so ru_maxrss is its own) and
prints the peak RSS, the RSS after imports (the floor), and the wall time.

    python benchmarks/splits_memory.py                     # 10,000 and 100,000 respond rows
    python benchmarks/splits_memory.py --rows 2000 --keep runs/bench   # keep the folder to look at

Measured on a 2-core VM (shards of 16 rows; 16k and 160k candidate rows):
    rows     before: peak RSS, wall         streaming: peak RSS, wall
    10,000   659 MB,  24 s                  344 MB,  23 s
    100,000  4,540 MB, 604 s                392 MB, 318 s
The floor (Python, pyarrow, prefect imported) is about 157 MB. Most of the wall is the MinHash of
each text and the Jaccard of LSH candidates (the same work as before; the synthetic texts share
a small vocabulary, so they have many candidates), and opening some 19,000 small shard files a
few times each.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORDS = ("river stone cloud green seven music paper harbour lantern meadow copper violet orbit canyon "
         "ember falcon glacier hollow island jasmine kettle ledger marble nectar oyster prism quartz "
         "saddle timber umber velvet willow yonder zephyr 春天 河流 山峰 城市 文章 标题 语气 格式").split()
DIMENSIONS = [("numerical", "数值约束"), ("inclusion", "包含约束"), ("tone_and_style", "语气风格约束"),
              ("numbering_and_list", "编号和列表约束"), ("template", "模版约束"), ("language", "语言约束")]


def words(rng: random.Random, chars: int) -> str:
    out, n = [], 0
    while n < chars:
        w = rng.choice(WORDS) + str(rng.randrange(1000))
        out.append(w)
        n += len(w) + 1
    return " ".join(out)


def constraints(rng: random.Random, k: int) -> list[dict]:
    out = []
    for i in range(k):
        dim, zh = DIMENSIONS[rng.randrange(len(DIMENSIONS))]
        out.append({"id": f"c{i + 1}", "text": words(rng, 60), "dimension": dim, "dimension_zh": zh,
                    "type": "content", "check": None})
    return out


def scores(rng: random.Random, cons: list[dict], full: bool) -> list[dict]:
    return [{"constraint_id": c["id"], "score": 10 if full or i else 6, "explanation": words(rng, 80),
             "rule_passed": None if i % 2 else full, "rule_reason": None} for i, c in enumerate(cons)]


def respond_row(rng: random.Random, n: int, prompt: str) -> dict:
    full = n % 10 != 3
    cons = constraints(rng, 1 + n % 9)
    lineage = {"row_id": f"{n:016x}", "seed_id": f"{n:015x}s", "parent_id": f"{n:015x}q", "stage": "respond",
               "model": "bench", "templates": "{}", "sampling": "{}", "taxonomy_version": "1"}
    return {**lineage, "text": words(rng, 100), "lang": "en", "source": f"seeds.jsonl:{n}",
            "fit_dimensions": ["numerical"], "new_constraint_types": [], "target_dimensions": ["numerical"],
            "instruction": prompt, "description": words(rng, 100), "constraints": cons, "input": "NULL",
            "qc_complete": True, "qc_complete_reasoning": words(rng, 100), "qc_non_redundant": True,
            "qc_non_redundant_reasoning": words(rng, 100), "prompt": prompt, "response": words(rng, 1500),
            "scores": scores(rng, cons, full), "overall": 10 if full else 6,
            "overall_explanation": words(rng, 100), "full_score": full}


def prompt_of(rng: random.Random, n: int, previous: list[str]) -> str:
    if previous and n % 100 == 7:  # an exact duplicate (after normalisation) of an earlier prompt
        return previous[rng.randrange(len(previous))].upper()
    if previous and n % 100 == 13:  # a near duplicate: one word changed
        return previous[-1][:300] + "X" + previous[-1][301:]
    return words(rng, 600)


def synthesise(run_dir: Path, n_rows: int, shard_size: int, seed: int = 0) -> None:
    from flows.contracts import stage_schema
    from flows.store import ShardStore

    store, rng, recent = ShardStore(run_dir), random.Random(seed), []
    schemas = {s: stage_schema(s) for s in ("taxonomy", "respond", "dpo", "iopo")}
    for shard, start in enumerate(range(0, n_rows, shard_size)):
        rows = {s: [] for s in schemas}
        rejects = {s: [] for s in schemas}
        for n in range(start, min(start + shard_size, n_rows)):
            prompt = prompt_of(rng, n, recent)
            recent = (recent + [prompt])[-50:]
            row = respond_row(rng, n, prompt)
            rows["respond"].append(row)
            rows["taxonomy"].append({k: row[k] for k in schemas["taxonomy"].names} | {"stage": "taxonomy"})
            if not row["full_score"]:
                continue
            pick = n % 4
            if pick == 0:
                rows["dpo"].append({**row, "row_id": row["row_id"] + "d", "stage": "dpo",
                                    "rejected_response": words(rng, 1500),
                                    "rejected_scores": scores(rng, row["constraints"], False), "rejected_overall": 5})
            elif pick == 1:
                cons2 = row["constraints"] + constraints(rng, 1)
                rows["iopo"].append({**row, "row_id": row["row_id"] + "i", "stage": "iopo",
                                     "edit_op": ("add", "delete", "revise")[n % 3], "edited_constraint_ids": ["c1"],
                                     "constraints2": cons2, "prompt2": row["prompt"] + "\n" + words(rng, 60),
                                     "response2": words(rng, 1500), "scores_y2_x2": scores(rng, cons2, True),
                                     "scores_y1_x2": scores(rng, cons2, False),
                                     "scores_y2_x1": scores(rng, row["constraints"], False)})
            else:
                stage = ("dpo", "iopo")[pick - 2]
                rejects[stage].append({"row_id": row["row_id"], "seed_id": row["seed_id"], "stage": stage,
                                       "reason": "edit_failed", "detail": f"op={('add', 'revise')[n % 2]};x", "row": None})
        for stage, schema in schemas.items():
            store.write_shard(stage, shard, schema, rows[stage], rejects[stage], "bench")


def measure(run_dir: Path) -> dict:
    """write_outputs over `run_dir` in this process: peak RSS, RSS after imports, wall."""
    from flows.config import RunConfig
    from flows.outputs import write_outputs
    from flows.prompts import default_library
    from flows.store import ShardStore
    from flows.taxonomy import load_taxonomy

    cfg, prompts, taxonomy = RunConfig(out=str(run_dir)), default_library(), load_taxonomy()
    floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    manifest = write_outputs(cfg, ShardStore(run_dir), "bench", "openai", prompts, taxonomy, {}, time.time())
    wall = time.perf_counter() - start
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "floor_rss_mb": round(floor, 1), "wall_s": round(wall, 2),
            "splits": {k: v["rows"] for k, v in manifest["splits"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000], help="respond rows per run folder")
    parser.add_argument("--shard-size", type=int, default=16, help="rows per shard (the pipeline's default: 16)")
    parser.add_argument("--keep", type=Path, help="write the run folders here (one per size) instead of a temp dir")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process: one measurement
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return
    print(f"{'rows':>8} {'synth_s':>8} {'peak_rss_mb':>12} {'floor_rss_mb':>13} {'above_floor_mb':>15} {'wall_s':>8}  splits")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            run_dir = (args.keep or Path(tmp)) / f"rows-{n}"
            t = time.perf_counter()
            synthesise(run_dir, n, args.shard_size)
            synth = time.perf_counter() - t
            child = subprocess.run([sys.executable, __file__, "--measure", str(run_dir)], capture_output=True,
                                   text=True, cwd=REPO)
            if child.returncode:
                sys.exit(child.stderr)
            r = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{n:>8} {synth:>8.1f} {r['peak_rss_mb']:>12.1f} {r['floor_rss_mb']:>13.1f} "
                  f"{r['peak_rss_mb'] - r['floor_rss_mb']:>15.1f} {r['wall_s']:>8.2f}  {r['splits']}", flush=True)


if __name__ == "__main__":
    main()

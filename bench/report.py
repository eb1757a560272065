#!/usr/bin/env python3
"""Side-by-side comparison of ferrocuda benchmark results (bench/README.md).

    report.py [--markdown] FILE...

Each FILE holds JSON lines appended by the benchmark programs (raw C baseline, ferrocuda, cudarc):
one `"bench":"_meta"` line per program run, then one line per row with impl, bench, regime, state,
p50_us, p90_us, p99_us, n (and optionally rate, rate_unit, requested_us). Rows are matched on
(bench, regime, state). When a row appears several times for one implementation (several rounds or
files), each percentile is the median over its appearances.

Printed per row: p50/p99 of every implementation, the ratios ferrocuda/raw and cudarc/raw (p50 and
p99; below 1 means faster than raw), and the target for ferrocuda: p50 <= 1.05 x raw or
<= raw + 0.1 us, and p50 no slower than cudarc within the same tolerance.
Standard library only: the GPU machines have python3 and nothing else.
"""

import json
import statistics
import sys

KNOWN_IMPLS = ["raw", "ferrocuda", "cudarc"]
RATIO_MAX = 1.05
ABS_SLACK_US = 0.1


def load(paths):
    meta, rows, order = [], {}, []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    sys.exit(f"{path}:{lineno}: not JSON ({e})")
                if rec.get("bench") == "_meta":
                    meta.append(rec)
                    continue
                key = (rec["bench"], rec.get("regime", ""), rec.get("state", ""))
                if key not in rows:
                    rows[key] = {}
                    order.append(key)
                rows[key].setdefault(rec.get("impl", "?"), []).append(rec)
    return meta, rows, order


def agg(recs, field):
    vals = [r[field] for r in recs if isinstance(r.get(field), (int, float))]
    return statistics.median(vals) if vals else None


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return None if a is None or b in (None, 0) else a / b


def within(x, ref):
    return x <= ref * RATIO_MAX or x <= ref + ABS_SLACK_US


def table(header, body, markdown):
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        out += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(out)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    line = lambda r: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in body])


def main(argv):
    markdown = "--markdown" in argv
    paths = [a for a in argv if a != "--markdown"]
    if not paths:
        sys.exit(__doc__)
    meta, rows, order = load(paths)
    if not rows:
        sys.exit("no benchmark rows in " + ", ".join(paths))
    seen = {i for r in rows.values() for i in r}
    impls = [i for i in KNOWN_IMPLS if i in seen] + sorted(seen - set(KNOWN_IMPLS))
    others = [i for i in impls if i != "raw"]

    runs = {}
    for m in meta:
        what = (f"{m.get('gpu', '?')}, cuDriverGetVersion {m.get('driver_version', '?')}, "
                f"commit {m.get('commit', '?')}")
        if m.get("nvrm"):
            what += f"\n    {m['nvrm']}"
        runs.setdefault((m.get("impl", "?"), what), []).append(m.get("date", "?"))
    for (impl, what), dates in runs.items():
        print(f"{impl}: {what}\n    {len(dates)} run(s): {', '.join(dates)}")
    print()

    header = ["bench", "regime", "state"]
    for i in impls:
        header += [f"{i} p50", f"{i} p99"]
    if "raw" in impls:
        for i in others:
            header += [f"{i}/raw p50", f"{i}/raw p99"]
    if "ferrocuda" in impls and "raw" in impls:
        header.append("target")
    body, misses = [], 0
    for key in order:
        r = rows[key]
        p50 = {i: agg(r.get(i, []), "p50_us") for i in impls}
        p99 = {i: agg(r.get(i, []), "p99_us") for i in impls}
        cells = list(key)
        for i in impls:
            cells += [fmt(p50[i]), fmt(p99[i])]
        if "raw" in impls:
            for i in others:
                cells += [fmt(ratio(p50[i], p50["raw"]), 3), fmt(ratio(p99[i], p99["raw"]), 3)]
        if "ferrocuda" in impls and "raw" in impls:
            f, raw, cu = p50["ferrocuda"], p50["raw"], p50.get("cudarc")
            if f is None or raw is None:
                verdict = "-"
            else:
                problems = []
                if not within(f, raw):
                    problems.append("> raw")
                if cu is not None and not within(f, cu):
                    problems.append("> cudarc")
                verdict = "MISS " + ", ".join(problems) if problems else "ok"
                misses += bool(problems)
            cells.append(verdict)
        body.append(cells)
    print("times in us (lower is better); ratios < 1: faster than raw")
    print(table(header, body, markdown))

    rate_rows = [k for k in order if any(agg(v, "rate") is not None for v in rows[k].values())]
    if rate_rows:
        print()
        h = ["bench", "regime", "state"] + [f"{i} rate" for i in impls] + ["unit"]
        b = []
        for k in rate_rows:
            unit = next((rec.get("rate_unit", "") for v in rows[k].values() for rec in v), "")
            b.append(list(k) + [fmt(agg(rows[k].get(i, []), "rate"), 1) for i in impls] + [unit])
        print("rates (higher is better; at the median time)")
        print(table(h, b, markdown))

    acc_rows = [k for k in order if any(agg(v, "requested_us") is not None for v in rows[k].values())]
    if acc_rows:
        print()
        h = ["bench", "regime", "state", "requested"] + [f"{i} p50 error" for i in impls]
        b = []
        for k in acc_rows:
            req = next(agg(v, "requested_us") for v in rows[k].values() if agg(v, "requested_us") is not None)
            errs = []
            for i in impls:
                e = agg(rows[k].get(i, []), "p50_us")
                errs.append("-" if e is None else f"{e - req:+.2f}")
            b.append(list(k) + [fmt(req, 1)] + errs)
        print("elapsed-time accuracy: measured p50 - requested, us")
        print(table(h, b, markdown))

    # Rows taken in several process states (the event rows): each state against the same
    # implementation's fresh row (the target: after_gpuwrite within 1.1x of fresh).
    multi = {}
    for (bench, regime, state) in order:
        multi.setdefault((bench, regime), []).append(state)
    state_rows = [(k, states) for k, states in multi.items() if "fresh" in states and len(states) > 1]
    if state_rows:
        print()
        h = ["bench", "regime", "state"] + [f"{i} p50" for i in impls] + [f"{i} /fresh" for i in impls]
        b = []
        for (bench, regime), states in state_rows:
            fresh = {i: agg(rows[(bench, regime, "fresh")].get(i, []), "p50_us") for i in impls}
            for st in states:
                cur = {i: agg(rows[(bench, regime, st)].get(i, []), "p50_us") for i in impls}
                b.append([bench, regime, st] + [fmt(cur[i]) for i in impls]
                         + [fmt(ratio(cur[i], fresh[i]), 2) for i in impls])
        print("process state effect: p50 against the same implementation's fresh row")
        print(table(h, b, markdown))

    several_gpus(rows, order, markdown)

    if "ferrocuda" in impls and "raw" in impls:
        print()
        print(f"ferrocuda target (p50 <= {RATIO_MAX} x raw or raw + {ABS_SLACK_US} us, "
              f"and no slower than cudarc likewise): {misses} row(s) missed")


FANOUT_MAX = 1.1  # target: N-GPU fan-out p50 <= 1.1 x single GPU
POLL_CHAIN_MAX_US = 5.0  # target: the all-polling GPU0 -> GPU1 chain p50 <= 5 us
POLL_CHAINS = ("peer_poll_all", "relay_poll", "relay_fused")


def several_gpus(rows, order, markdown):
    """The several-GPU targets: fan-out on N GPUs against 1 GPU (per implementation: raw C and
    ferrocuda's multi_bench), and the GPU0 -> GPU1 relays against raw, with the polling chains
    against 5 us."""
    impls = [i for i in ("raw", "multi") if any(i in rows[k] for k in order if k[0].startswith("multi_"))]
    fan = {}
    for (bench, regime, state) in order:
        if bench == "multi_fanout" and "_" in regime:
            how, n = regime.rsplit("_", 1)
            fan.setdefault(how, {})[n] = rows[(bench, regime, state)]
    if fan:
        h = ["gate", "GPUs"] + [f"{i} {c}" for i in impls for c in ("1 GPU p50", "N GPUs p50", "N/1")] + ["target"]
        b = []
        for how, by_n in fan.items():
            many = [n for n in by_n if n != "1gpu"]
            if "1gpu" not in by_n or not many:
                continue
            n = many[0]
            cells, verdicts = [how, n.removesuffix("gpu")], []
            for i in impls:
                one, all_ = agg(by_n["1gpu"].get(i, []), "p50_us"), agg(by_n[n].get(i, []), "p50_us")
                r = ratio(all_, one)
                cells += [fmt(one), fmt(all_), fmt(r, 3)]
                if r is not None:
                    verdicts.append(f"{i} {'ok' if r <= FANOUT_MAX else 'MISS'}")
            b.append(cells + [", ".join(verdicts) or "-"])
        if b:  # none on one GPU: the 1-GPU rows are in the main table
            print()
            print(f"several GPUs: host signal -> gated ack on every GPU (target: N/1 <= {FANOUT_MAX})")
            print(table(h, b, markdown))
    relays = [k for k in order if k[0] == "multi_relay"]
    if relays:
        print()
        h = ["chain"] + [f"{i} p50" for i in impls]
        if "raw" in impls and "multi" in impls:
            h.append("multi/raw")
        h.append("target")
        b = []
        for k in relays:
            p50 = {i: agg(rows[k].get(i, []), "p50_us") for i in impls}
            cells = [k[1]] + [fmt(p50[i]) for i in impls]
            if "raw" in impls and "multi" in impls:
                cells.append(fmt(ratio(p50["multi"], p50["raw"]), 3))
            if k[1] in POLL_CHAINS:
                cells.append(", ".join(f"{i} {'ok' if p50[i] <= POLL_CHAIN_MAX_US else 'MISS'}"
                                       for i in impls if p50[i] is not None) or "-")
            else:
                cells.append("-")
            b.append(cells)
        if all(k[1].endswith("_1gpu") for k in relays):
            print("one GPU: host -> GPU0 stream -> another stream of GPU0 ack "
                  "(the relays without the link; the 5 us target is for two GPUs)")
        else:
            print(f"several GPUs: host -> GPU0 -> GPU1 ack (target: polling chains <= {POLL_CHAIN_MAX_US} us)")
        print(table(h, b, markdown))


if __name__ == "__main__":
    main(sys.argv[1:])

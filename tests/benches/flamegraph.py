#!/usr/bin/env python3
"""Renders `perf script` output as an SVG flame graph (no dependencies).

    perf record -F 499 -g -p PID -- sleep 5
    perf script | tests/benches/flamegraph.py "title" > graph.svg

Stacks are folded per thread name (the bottom frame is the thread: payhook-admit-0,
actix-rt|system…, payhook-processor-0, payhook-load); frames narrower than 0.2 % are
dropped, which keeps a graph in the hundreds of kilobytes. Hover shows a frame's share of
all samples.
"""
import html
import re
import sys
from collections import defaultdict

MIN_SHARE = 0.002
WIDTH, ROW = 1600, 16


def clean(symbol):
    symbol = re.sub(r"\+0x[0-9a-f]+$", "", symbol)
    symbol = re.sub(r"::h[0-9a-f]{16}$", "", symbol)  # Rust legacy mangling hash
    return symbol


def folded(lines):
    stacks = defaultdict(int)
    thread, frames = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if thread is not None:
                stacks[tuple([thread] + frames[::-1])] += 1
            thread, frames = None, []
        elif not line.startswith((" ", "\t")):
            name = line.split()[0]
            thread = re.sub(r"[0-9]+$", "N", name) if name.startswith("tokio") else name
        else:
            parts = line.strip().split(None, 1)
            symbol = parts[1] if len(parts) > 1 else parts[0]
            symbol = re.sub(r"\s+\(.*\)$", "", symbol)
            frames.append(clean(symbol))
    if thread is not None:
        stacks[tuple([thread] + frames[::-1])] += 1
    return stacks


def tree(stacks):
    root = {"name": "all", "n": 0, "kids": {}}
    for stack, n in stacks.items():
        node = root
        node["n"] += n
        for frame in stack:
            node = node["kids"].setdefault(frame, {"name": frame, "n": 0, "kids": {}})
            node["n"] += n
    return root


def color(name):
    h = sum(map(ord, name)) % 60
    if "sqlite" in name or "pq" in name.lower() or "diesel" in name:
        return f"rgb(80,{140 + h},{200 + h // 2})"
    if name.startswith("payhook"):
        return f"rgb(90,{180 + h // 2},90)"
    return f"rgb(230,{100 + h * 2},{40 + h // 2})"


def render(root, title):
    total = root["n"] or 1
    out, depth_max = [], [0]

    def walk(node, x, depth):
        share = node["n"] / total
        if share < MIN_SHARE:
            return
        depth_max[0] = max(depth_max[0], depth)
        w = share * WIDTH
        y = depth * ROW
        label = html.escape(node["name"])
        text = label if w > 40 else ""
        if len(text) * 7 > w:
            text = text[: max(0, int(w / 7) - 2)] + ".."
        out.append(
            f'<g><title>{label} ({node["n"]} samples, {share * 100:.2f}%)</title>'
            f'<rect x="{x:.1f}" y="{{Y{y}}}" width="{w:.1f}" height="{ROW - 1}" fill="{color(node["name"])}"/>'
            f'<text x="{x + 3:.1f}" y="{{T{y}}}">{text}</text></g>'
        )
        cx = x
        for kid in sorted(node["kids"].values(), key=lambda k: k["name"]):
            walk(kid, cx, depth + 1)
            cx += kid["n"] / total * WIDTH

    walk(root, 0.0, 0)
    height = (depth_max[0] + 3) * ROW
    body = "\n".join(out)
    body = re.sub(r"\{Y(\d+)\}", lambda m: str(height - ROW - int(m.group(1))), body)
    body = re.sub(r"\{T(\d+)\}", lambda m: str(height - ROW - int(m.group(1)) + 12), body)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="11">\n'
        f'<text x="4" y="14" font-size="14">{html.escape(title)} ({total} samples)</text>\n'
        f"{body}\n</svg>\n"
    )


if __name__ == "__main__":
    title = sys.argv[1] if len(sys.argv) > 1 else "flame graph"
    sys.stdout.write(render(tree(folded(sys.stdin)), title))

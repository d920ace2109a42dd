# File-level import circles of a Rust source tree: `python3 scripts/circles.py src` (or actors/src).
# Edges are `crate::…` and `super::…` paths outside comments and test modules (macro bodies'
# `$crate::` paths are expansion-site, not edges); prints each strongly connected component.
import os, re, sys
root = sys.argv[1]
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3]
            mod = rel.replace(os.sep, '::')
            if mod.endswith('::mod'): mod = mod[:-5]
            files[mod] = p
mods = set(files)
def resolve(path):
    parts = path.split('::')
    for i in range(len(parts), 0, -1):
        cand = '::'.join(parts[:i])
        if cand in mods: return cand
    return None
graph = {m: set() for m in mods}
for m, p in files.items():
    src = '\n'.join(l for l in open(p).read().split('\n') if not l.strip().startswith('//'))
    # drop cfg(test) mods crudely
    src = src.split('#[cfg(test)]\nmod tests')[0]
    for mm in re.finditer(r'(?<!\$)crate::([a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*)', src):
        t = resolve(mm.group(1))
        if t and t != m and not m.startswith(t + '::') and not t.startswith(m + '::'):
            graph[m].add(t)
    for mm in re.finditer(r'super::([a-z_][a-z0-9_]*)', src):
        parent = m.rsplit('::', 1)[0] if '::' in m else ''
        t = resolve((parent + '::' if parent else '') + mm.group(1))
        if t and t != m and not t.startswith(m + '::') and not m.startswith(t+'::'):
            graph[m].add(t)
# tarjan
idx, low, st, on, out = {}, {}, [], set(), []
c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in graph[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: out.append(sorted(comp))
for v in graph:
    if v not in idx: sc(v)
print(len(out), 'circles'); [print(' ', x) for x in out]

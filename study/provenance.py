"""What produced a result: a fingerprint of the code that decides a round, the git commit, the
CPU; and whether a results file is still what the current code and settings would produce.

No torch here, so report/make_report.py can check which code the committed results come from.
"""
import ast
import hashlib
import io
import os
import platform
import subprocess
import tokenize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The code that decides a round's numbers: the pairs, the networks, training and evaluation, and
# test.py's round with its seeds (those of its definitions alone). The rest (test.py's command
# line, worker processes, the study package, the report) can change without making a result
# stale; the rows' settings are checked against the studies' definitions instead (`stale`).
ROUND_CODE = ('dlc_practical_prologue.py', 'models.py', 'train.py')
ROUND_DEFINITIONS = ('test.py', ('seed_for', 'network', 'run_round'))

# Code fingerprints whose rounds give the same numbers as the current code's, each checked by
# running every row of every study on both, round by round (how, in the note): results files of
# those fingerprints are current. Keyed by the current fingerprint, so any change to the round
# code drops the entry until it is checked again.
SAME_NUMBERS = {
    '3f49cf3be70f': {
        '7926e8330723': 'round 0 of every row of every committed study (126 runs, each with its '
                        'study\'s seed) run with both codes on one machine (Intel Xeon with AMX, '
                        'bf16 autocast on, torch 2.13.0+cpu, one thread per run): every recorded '
                        'figure identical, times aside. The change: the bf16 probe tries a digit '
                        'branch\'s operations (torch 1.10 has no bf16 max pooling); on a CPU '
                        'without native bf16 the probe is never reached; 2026-12-03',
        '006751956a5b': 'identical to 7926e8330723 (below), 126 runs; 2026-12-03',
        '88abac5d8449': 'identical to 006751956a5b (below) on the committed machine kind; '
                        '2026-12-03',
    },
    '7926e8330723': {
        '006751956a5b': 'round 0 of every row of every committed study (variants, baselines, '
                        'backbones, heads, aux_weight, regularization, curves, data_size, '
                        'no_digit_labels, fast, confirm, tuning: 126 runs, each with its '
                        'study\'s seed) run with both codes on one machine (Intel Xeon with AMX, '
                        'bf16 autocast on, torch 2.13.0+cpu, one thread per run): every recorded '
                        'figure identical (errors, final loss, pair and weight digests, curves, '
                        'mistakes), times aside. The change: torch\'s default generator where '
                        'none is given (torch 1.4 refuses generator=None); 2026-12-03',
        '88abac5d8449': 'identical to 006751956a5b, round 0 of every row of every study (122 '
                        'runs) on the machine of the committed results (AMD EPYC, avx2 fma, '
                        'torch 2.13.0+cpu), times aside; 2026-12-03',
    },
}


def code_only(source):
    """The source without comments, docstrings, blank lines and trailing spaces, so that
    rewording an explanation leaves the fingerprint alone; found from token and node positions,
    which do not change between Python versions."""
    lines = source.split('\n')
    cut = []  # (start line, start col, end line, end col): 1-based lines, columns in characters
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            cut.append((*token.start, *token.end))
    for node in ast.walk(ast.parse(source)):
        body = getattr(node, 'body', None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            doc = body[0]
            # ast counts columns in UTF-8 bytes, tokenize and string slices in characters.
            chars = lambda line, col: len(lines[line - 1].encode()[:col].decode())
            cut.append((doc.lineno, chars(doc.lineno, doc.col_offset), doc.end_lineno,
                        chars(doc.end_lineno, doc.end_col_offset)))
    for line, col, end_line, end_col in sorted(cut, reverse=True):  # from the end: positions hold
        lines[line - 1:end_line] = [lines[line - 1][:col] + lines[end_line - 1][end_col:]]
    return '\n'.join(line.rstrip() for line in lines if line.strip()) + '\n'


def definitions(source, names):
    """The source of the top-level functions and assignments named, in the file's order."""
    lines, parts = source.split('\n'), []
    for node in ast.parse(source).body:
        targets = [getattr(t, 'id', None) for t in getattr(node, 'targets', [])]
        if getattr(node, 'name', None) in names or set(targets) & set(names):
            start = min([node.lineno] + [d.lineno for d in getattr(node, 'decorator_list', [])])
            parts.append('\n'.join(lines[start - 1:node.end_lineno]))
    return '\n'.join(parts) + '\n'


def code_fingerprint(root=ROOT):
    """12 hex digits that change with any change to the code that decides a round, by content
    alone: file names, comments and docstrings do not count."""
    digest = hashlib.sha256()
    for name in ROUND_CODE:
        with open(os.path.join(root, name), encoding='utf-8') as f:
            digest.update(code_only(f.read()).encode())
    name, wanted = ROUND_DEFINITIONS
    with open(os.path.join(root, name), encoding='utf-8') as f:
        digest.update(code_only(definitions(f.read(), wanted)).encode())
    return digest.hexdigest()[:12]


def git_commit(root=ROOT):
    """The checkout's commit, and whether the code that decides a round differs from it; None
    outside git."""
    def git(*args):
        return subprocess.run(['git', '-C', root, *args], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    try:
        commit = git('rev-parse', 'HEAD')
        changed = git('status', '--porcelain', '--', *ROUND_CODE, ROUND_DEFINITIONS[0])
    except (OSError, subprocess.SubprocessError):
        return None
    return dict(commit=commit, runtime_files_changed=bool(changed))


def code(root=ROOT):
    return dict(fingerprint=code_fingerprint(root), git=git_commit(root))


def stale(data, current_rows, fingerprint=None):
    """Why a results file is not what the current code and settings would produce: its code
    fingerprint, and each row whose recorded settings differ from current_rows ({name: the
    settings its study gives that row now}, None for a study that defines no rows). Empty
    when it is current."""
    fingerprint = fingerprint or code_fingerprint()
    recorded = data.get('code', {}).get('fingerprint')
    current = recorded == fingerprint or recorded in SAME_NUMBERS.get(fingerprint, {})
    why = [] if current else [f'code {recorded}, not {fingerprint}']
    if current_rows is not None:
        for name, config in rows_settings(data).items():
            if name not in current_rows:
                why.append(f'row {name} is no longer in study {data["study"]}')
            elif config != current_rows[name]:
                changed = sorted(k for k in set(config) | set(current_rows[name])
                                 if config.get(k) != current_rows[name].get(k))
                why.append(f'row {name} ran with other settings ({", ".join(changed)})')
    return why


def rows_settings(data):
    """{row name: its recorded settings} of a results file (a study's rows, the benchmark's
    models and reference)."""
    rows = {r['name']: r['config'] for r in data.get('rows', [])}
    rows.update((m['model'], m['config']) for m in data.get('models', []) if 'config' in m)
    return rows


def _cpuinfo(key):
    try:
        with open('/proc/cpuinfo') as f:
            return next((line.split(':', 1)[1].strip() for line in f if line.startswith(key)), '')
    except OSError:
        return ''


def cpu_name():
    return _cpuinfo('model name') or platform.processor() or platform.machine()


# Instruction sets that decide which kernels oneDNN runs, so which float sums a run makes.
KERNEL_FLAGS = ('avx2', 'fma', 'avx_vnni', 'avx512f', 'avx512bw', 'avx512_vnni', 'avx512_bf16',
                'avx512_fp16', 'amx_tile', 'amx_bf16', 'amx_int8')


def cpu_flags():
    """The CPU's kernel-deciding instruction sets, space-separated ('' where unknown)."""
    flags = set(_cpuinfo('flags').split())
    return ' '.join(f for f in KERNEL_FLAGS if f in flags)

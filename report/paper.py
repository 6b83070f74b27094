"""The paper: report/paper.typ written from the results files, compiled to report/paper.pdf.

Three pages of main text in the form of the published course reports, then an appendix with the
further studies. Every number comes from report/results/*.json except the published reports'
figures in PRIOR, which are theirs. The PDF carries no date and only typst's own fonts, so it
regenerates byte for byte from the same results (tests/test_report.py checks it).
"""
import json
import os

from study.summary import (ci_text, digit_stat, mean_std, num, pm, rows_by_name,
                     run_seconds, table_cells)

HERE = os.path.dirname(os.path.abspath(__file__))
TYP = os.path.join(HERE, 'paper.typ')
PDF = os.path.join(HERE, 'paper.pdf')

# The best published EE-559 reports on this task, as they state it: mean test error in % of the
# four variants and of their best design (a fully convolutional LeNet-5 with both, 30 epochs).
PRIOR = {'plain': '15-17', 'ws': '12-14', 'aux': '6-9', 'ws+aux': '5-7', 'best': '3.6'}
PRIOR_SECONDS = '3-4'  # their seconds per 25-epoch run on a CPU

PREAMBLE = '''#set document(title: "Comparing two digits: weight sharing, auxiliary losses and a posterior head", date: none)
#set page(paper: "a4", margin: (x: 1.5cm, y: 1.6cm), numbering: "1", columns: 2)
#set columns(gutter: 0.6cm)
#set text(font: "New Computer Modern", size: 10pt)
#set par(justify: true, leading: 0.5em, spacing: 0.7em)
#set heading(numbering: "1")
#show heading: set text(size: 10.5pt)
#show heading: set block(above: 0.9em, below: 0.5em)
#set table(stroke: none, inset: (x: 3pt, y: 1.6pt))
#show table: set text(size: 7.5pt)
#show figure.caption: set text(size: 8.5pt)
#show raw: set text(size: 8pt)
#set figure(gap: 0.5em)
#show figure: set block(spacing: 0.9em)
'''


def t(text):
    """Text from a results file as a typst string, so that no markup in it is interpreted."""
    return '#' + json.dumps(str(text), ensure_ascii=False)


def code(text):
    """A command, in monospace (a text font would join its -- into a dash)."""
    return '#raw(' + json.dumps(str(text), ensure_ascii=False) + ')'


def table(header, rows, align=None):
    """A typst table, rules above and below and under the header."""
    align = align or ('left',) + ('right',) * (len(header) - 1)
    cells = ', '.join(f'[{t(c)}]' for c in header)
    body = ',\n  '.join(', '.join(f'[{t(c)}]' for c in r) for r in rows)
    return (f'table(columns: {len(header)}, align: ({", ".join(align)},),\n'
            f'  table.hline(), {cells},\n  table.hline(stroke: 0.5pt),\n  {body},\n  table.hline())')


def figure(body, caption, label, wide=None):
    """A numbered figure or table; wide ('top', 'bottom' or 'auto') floats there across the
    columns of the page."""
    where = f', placement: {wide}, scope: "parent"' if wide else ''
    return f'#figure({body}, caption: [{caption}]{where}) <{label}>'


def image(name, width='100%'):
    return f'image("figures/{name}.png", width: {width})'


def study_table(data, first='row'):
    """A study as a table: the columns of the report's table that fit a page."""
    header, rows = table_cells(data)
    keep = (0, 1, 2, 5, 8, 7)  # row, params, error, digit error, paired difference, s / run
    return table([first] + [header[k] for k in keep[1:]], [[r[k] for k in keep] for r in rows])


def how(data):
    """The command and machine of a results file, for a caption."""
    env = data['environment']
    return (f"{code(data['command'])}: {data['settings']['rounds']} rounds per row, seed "
            f"{data['settings']['seed']}, {t(env['cpu'])}, torch {t(env['torch'])}")


class Paper:
    """The figures the text needs, read once from the results."""

    def __init__(self, results, pooled, bf16_rows, steps):
        self.results, self.pooled, self.bf16_rows, self.steps = results, pooled, bf16_rows, steps
        self.v = results['variants']
        self.rows = rows_by_name(self.v)
        self.err = {name: r['summary']['test_error']['mean'] for name, r in self.rows.items()}
        self.best = self.rows['best']
        self.pool = pooled['summary'] if pooled else self.best['summary']
        bench = results.get('bench')
        self.ref_seconds = bench['reference']['seconds'] if bench else None

    def e(self, name):
        return t(num(self.err[name]))

    def digit(self, name):
        return t(num(digit_stat(self.rows[name]['summary'])['mean']))

    def diff(self, name):
        return t(ci_text(self.rows[name]['paired_vs_reference']))

    def build(self):
        return '\n'.join([PREAMBLE] + self.title() + self.introduction() + self.models()
                         + self.method() + self.results_section() + self.discussion()
                         + self.conclusion() + self.appendix()) + '\n'

    def title(self):
        best_seconds = run_seconds(self.best['summary'])
        pooled = (f"{t(num(self.pool['test_error']['mean']))} % over {self.pool['n']} rounds "
                  f"(standard error {t(num(self.pooled['sem']))})" if self.pooled else
                  f"{self.e('best')} %")
        return [
            '#place(top + center, float: true, scope: "parent", clearance: 1.4em)[',
            '  #text(size: 14pt, weight: "bold", hyphenate: false)[Comparing two digits: weight '
            'sharing, auxiliary losses and a posterior head]',
            '  #v(0.1em)',
            '  #text(size: 9.5pt)[EE-559 Deep Learning, Project 1. Written from the project\'s '
            'results files by `report/make_report.py`.]',
            '  #v(0.5em)',
            '  #block(width: 90%)[#set text(size: 9pt)',
            f"  *Abstract.* A network reads two 14x14 MNIST digits and predicts whether the first "
            f"is lesser or equal to the second, from 1000 training pairs. We compare Siamese "
            f"networks with and without weight sharing and with and without an auxiliary digit "
            f"loss, each over {self.v['settings']['rounds']} rounds of fresh pairs and weights. "
            f"The digit labels do most of the work: the test error falls from {self.e('plain')} % "
            f"(plain) to {self.e('aux')} % with the auxiliary loss, and to {self.e('ws+aux')} % "
            f"with weight sharing too. Turning the two digit predictions into the exact probability "
            f"of the target gives a head without parameters; with a wider branch, deskewed digits "
            f"and test-time moves it reaches {pooled}, in {t(num(best_seconds))} s per run on one "
            f"CPU thread.]",
            ']', '']

    def introduction(self):
        return [
            '= Introduction',
            'The task of EE-559 Project 1 pairs two MNIST digits, average-pooled to 14x14, and asks '
            'whether the first is lesser or equal to the second. Each round draws 1000 training '
            'pairs from MNIST train and 1000 test pairs from MNIST test; the classes of both digits '
            'of a training pair may serve as an auxiliary target. The question is what two ideas '
            'buy: *weight sharing*, one digit branch for both images, and an *auxiliary loss* on '
            'the digit classes. The best published course reports found about '
            f"{PRIOR['plain']} % test error for a plain Siamese network, {PRIOR['ws']} % with "
            f"weight sharing, {PRIOR['aux']} % with the auxiliary loss and {PRIOR['ws+aux']} % "
            f"with both, and {PRIOR['best']} % for their best design, a fully convolutional "
            f'LeNet-5 with both (30 epochs), at {PRIOR_SECONDS} s per 25-epoch run on a CPU. We '
            'rerun that comparison with a tuned training recipe, measure each effect on paired '
            'rounds, and push the best design as far as a few seconds per run allow (@prior).',
            '']

    def models(self):
        c = self.best['config']
        return [
            '= Models',
            'All models are one class, `SiameseNet`: a digit branch maps each image to 10 digit '
            'logits and a head maps the two logit vectors to the pair answer. The branch has two '
            '3x3 convolutions (16 and 32 channels), each with 2x2 max pooling, a hidden layer of '
            '96 units and a linear layer to 10 logits, with batch norm after each layer; the '
            'classic head is an MLP on the 20 logits. With weight sharing both images go through '
            'the same branch module, which halves the parameters (@variants). The auxiliary loss '
            'is a training choice, $cal(L) = "CE"(y, hat(y)) + lambda ("CE"(c_1, p_1) + "CE"(c_2, '
            'p_2))$ with weight $lambda$, so a variant with and without it is the same network. '
            'The aux variants also re-pair their 2000 training digits at random each epoch, which '
            'only the digit labels allow.', '',
            'The *posterior head* has no parameters. From the digit distributions $p_1, p_2$ of the '
            'branch it computes the probability of the target',
            '$ P(d_1 <= d_2) = sum_(i <= j) p_1(i) thin p_2(j) $',
            'and outputs $log P(d_1 > d_2)$ and $log P(d_1 <= d_2)$, so cross-entropy on them is '
            'the likelihood of the pair label. The *best model* uses it on a branch of twice the '
            f"width ({t(format(self.best['nb_parameters'], ','))} parameters), digit-loss weight "
            f"{t(format(c['aux_weight'], 'g'))}, {c['nb_epochs']} epochs, deskewed digits (each "
            'image sheared upright about its centre of mass, computed from the image alone) and '
            'predictions averaged over the image and its four one-pixel moves.', '']

    def method(self):
        tuning = self.results.get('tuning')
        rounds = tuning['settings']['rounds'] if tuning else 0
        return [
            '= Method',
            'Training uses AdamW with a one-cycle learning rate (peak $10^(-2)$, 25 epochs, '
            'batches of 50 pairs) and moves each digit by up to one pixel at random each epoch. '
            'Each *round* draws fresh pairs and fresh initial weights from seeds derived from the '
            'base seed and the round number. Round $r$ of every model uses the same pairs and the '
            'same initialization seed, so models are compared on *paired rounds*: we report the '
            'mean and standard deviation of the test error over rounds, and the mean paired '
            'difference to a reference model with its 95 % Student $t$ interval.', '',
            'Every setting was chosen on *held-out training pairs* only: the tuning study trains '
            'on three quarters of each round\'s 1000 training pairs and scores on the remaining '
            f'quarter, over {rounds} rounds (@steps; all of it in @tuning in the appendix). The '
            'test pairs give the final figures and nothing else: no epoch selection, no early '
            'stopping. Inputs are standardized with the training statistics; evaluation uses batch '
            'norm\'s running statistics and no dropout, so a pair\'s prediction does not depend on '
            'the other pairs.', ''] + self.steps_table()

    def steps_table(self):
        tuning = self.results.get('tuning')
        if not tuning:
            return []
        rows, previous = [], None
        by = rows_by_name(tuning)
        for name in (n for n in self.steps if n in by):
            s = by[name]['summary']
            rows.append([by[name]['about'], pm(s['test_error']),
                         '' if previous is None else f"{s['test_error']['mean'] - previous:+.2f}"])
            previous = s['test_error']['mean']
        return [figure(table(['step (from the course\'s settings, ws+aux)', 'valid. error %',
                              'change'], rows),
                       'How the recipe was found: validation error on held-out training pairs, '
                       'one step at a time.', 'steps'), '']

    def results_section(self):
        s = self.best['summary']
        out = ['= Results',
               f"@variants gives the four variants and the best model over "
               f"{self.v['settings']['rounds']} rounds, and @box their spread. Without digit labels, "
               f"weight sharing lowers the error from {self.e('plain')} % to {self.e('ws')} % "
               f"(paired difference {self.diff('ws')} pp). The auxiliary loss alone takes it to "
               f"{self.e('aux')} % ({self.diff('aux')} pp) and both together to "
               f"{self.e('ws+aux')} % ({self.diff('ws+aux')} pp). The best model makes "
               f"{t(pm(s['test_error']))} % test error on these rounds."]
        if self.pooled:
            parts = ', '.join(f"{row['summary']['n']} with seed {data['settings']['seed']}"
                              for _, data, row in self.pooled['parts'])
            out[-1] += (f" Pooled over every results file that ran it unchanged on other pairs "
                        f"({parts}), it makes {t(num(self.pool['test_error']['mean']))} % over "
                        f"{self.pool['n']} rounds, standard error {t(num(self.pooled['sem']))}, "
                        f"with {t(pm(self.pool['test_digit_error']))} % of the test digits "
                        f"misread.")
        out += ['', figure(study_table(self.v, 'model'),
                           f'The variants and the best model: mean ± std over rounds, paired '
                           f'difference to plain. {how(self.v)}.', 'variants', wide='top'), '',
                figure(image('variants_box'), 'Test error of each model over the rounds (log scale).',
                       'box'), '']
        data_size = self.results.get('data_size')
        if data_size:
            size = {r['name']: r['summary']['test_error']['mean'] for r in data_size['rows']}
            most = max(r['config']['nb_pairs'] for r in data_size['rows'])
            out += [f"@size shows how the variants scale with the number of training pairs. All "
                    f"improve with more pairs, and the gap stays: without the digit loss even "
                    f"{most} pairs leave {t(num(size[f'{most}/ws']))} % (ws), while with it 1000 "
                    f"pairs make {t(num(size['1000/ws+aux']))} % and {most} pairs "
                    f"{t(num(size[f'{most}/ws+aux']))} % (ws+aux).", '',
                    figure(image('data_size'), 'Test error against the number of training pairs '
                           '(mean ± std over rounds, log scales).', 'size'), '']
        bench = self.results.get('bench')
        if bench and self.ref_seconds:
            by = {(m['model'], m['path']): m for m in bench['models']}
            fast = self.results.get('fast')
            out += [f"*Speed.* A course-style run (a LeNet-size ws+aux net, 25 epochs, the plain "
                    f"fp32 loop on all cores) takes {t(num(self.ref_seconds))} s on "
                    f"{t(bench['environment']['cpu'])}. Our runs use one thread each, the "
                    f"channels-last memory format and, for the best and fast models, bfloat16 "
                    f"autocast where the CPU has it natively: the ws+aux variant takes "
                    f"{t(num(run_seconds(self.rows['ws+aux']['summary'])))} s and the best model "
                    f"{t(num(run_seconds(s)))} s per run"
                    + (f"; a five-epoch *fast* model makes "
                       f"{t(pm(fast['rows'][0]['summary']['test_error']))} % in "
                       f"{t(num(run_seconds(fast['rows'][0]['summary'])))} s" if fast else '')
                    + f". On the same rounds, channels-last changes the ws+aux error by "
                    f"{t(ci_text(by[('ws+aux', 'channels-last')]['paired_vs_fp32']))} pp against "
                    f"the plain loop (@speed).", '']
        return out

    def discussion(self):
        d_aux = self.digit('aux')
        nb = self.best['config']['nb_pairs']
        ours = dict(self.err, best=self.pool['test_error']['mean'])
        prior = [[name, published, num(ours[name])] for name, published in PRIOR.items()]
        why = (f"*Why the digit labels help far more than weight sharing.* {nb} pair labels "
               f"carry one bit each; the {2 * nb} digit labels carry one of ten classes each, and "
               f"re-pairing turns them into new pairs every epoch. Weight sharing gives the branch "
               f"twice the images and makes both digits read alike, which the comparison needs, "
               f"but without digit labels the branch must discover digits through a learned "
               f"comparison from {nb} bits. With the labels, the branch is a digit classifier and "
               f"the head has little left to learn.")
        curves, curve_figure = self.results.get('curves'), []
        if curves:
            last = {r['name']: {k: mean_std([run['curve'][k][-1] for run in r['runs']
                                              if run['status'] == 'ok'])[0]
                                for k in ('train_error', 'test_error')} for r in curves['rows']}
            why += (f" @curves shows it: at the last epoch the plain network misses "
                    f"{t(num(last['plain']['train_error']))} % of its training pairs and "
                    f"{t(num(last['plain']['test_error']))} % of the test pairs, having memorized "
                    f"pairs; with the digit loss and re-pairing, ws+aux misses "
                    f"{t(num(last['ws+aux']['train_error']))} % and "
                    f"{t(num(last['ws+aux']['test_error']))} %.")
            curve_figure = [figure(image('curves'), 'Training and test error after every epoch '
                                   '(mean ± std over rounds; the test curve is drawn for the '
                                   'figure only, nothing was chosen from it).', 'curves'), '']
        out = [figure(table(['model', 'published reports %', 'this work %'], prior),
                      'Mean test error against the best published course reports (their '
                      'figures; their best design is a fully convolutional LeNet-5). Ours over '
                      f"{self.v['settings']['rounds']} rounds, the best model over "
                      f"{self.pool['n']}.", 'prior'),
               '', '= Discussion', why, ''] + curve_figure + [
               f"*Where the remaining errors come from.* The aux variants misread {d_aux} % (aux) "
               f"and {self.digit('ws+aux')} % (ws+aux) of the test digits, the best model "
               f"{self.digit('best')} %. A pair is answered wrongly only when a misread digit "
               f"crosses the other digit, so a perfect head would miss fewer pairs than digits; "
               f"the posterior head is that head, which is why its pair error follows its digit "
               f"error (@mistakes in the appendix shows the pairs it misses: mostly digits a "
               f"reader would hesitate over).", '',
               '*Limits.* The settings were tuned for the ws+aux and best models and reused for '
               'the others. Ten rounds of 1000 test pairs leave a standard error of a third of '
               'the standard deviation shown, so differences of a few tenths of a point are '
               'noise unless the paired interval excludes zero. The figures come from one CPU; '
               'another CPU or torch version rounds sums differently and gives other per-round '
               'numbers, with means that agree within noise (`python test.py --reproduce` checks '
               'it). Many further ideas (augmentations, optimizers, ensembles) were tried on '
               'validation pairs only and gained nothing measurable.', '']
        return out

    def conclusion(self):
        return ['= Conclusion',
                f"On this task the auxiliary digit loss is the decisive idea: it cuts the error of a "
                f"plain Siamese network from {self.e('plain')} % to {self.e('aux')} %, against "
                f"{self.e('ws')} % for weight sharing alone, and the two together reach "
                f"{self.e('ws+aux')} %. Reading the answer off the digit distributions exactly, "
                f"instead of learning the comparison, brings the best model to "
                f"{t(num(self.pool['test_error']['mean']))} %, "
                f"{t(format(float(PRIOR['best']) / self.pool['test_error']['mean'], '.1f'))} times "
                f"below the best published design, within seconds per run on a CPU.",
                '#context [#metadata(here().page()) <main-end>]', '']

    def appendix(self):
        # One column from here: the appendix's tables are wide. Setting the page starts a new one.
        out = ['#set page(columns: 1)', '#heading(numbering: none)[Appendix]',
               '#set heading(numbering: "A")', '#counter(heading).update(0)', '']
        sections = [
            ('tuning', 'Tuning on held-out training pairs', 'Validation error behind each setting'),
            ('baselines', 'Non-Siamese baselines', 'The pair as a 2-channel image, against '
             'the Siamese nets'),
            ('backbones', 'Digit branches', 'Five branches, each in the four variants'),
            ('heads', 'Comparison heads', 'Heads on the ws+aux network'),
            ('aux_weight', 'Weight of the auxiliary loss', 'The digit-loss weight from 0 to 10'),
            ('regularization', 'Batch norm and dropout', 'Batch norm and dropout on ws+aux'),
            ('data_size', 'Number of training pairs', 'The four variants from 250 to 8000 pairs'),
            ('no_digit_labels', 'Without digit labels', 'The best model trained on the pair label '
             'only'),
        ]
        for name, title, caption in sections:
            data = self.results.get(name)
            if not data:
                continue
            out += [f'= {title}', figure(study_table(data), f'{caption}. {how(data)}.', name), '']
            if name == 'backbones':
                out += [figure(image('backbones', '70%'), 'Test error of each branch in the four '
                               'variants.', 'backbones-figure', wide='auto'), '']
            if name == 'aux_weight':
                out += [figure(image('aux_weight', '55%'), 'Pair and digit error against the '
                               'weight of the digit loss.', 'aux-figure', wide='auto'), '']
            if name == 'no_digit_labels':
                s = rows_by_name(data)['pair-loss-only']['summary']
                out += [f"Trained on pair labels alone, the ten outputs of the branch read "
                        f"{t(pm(s.get('test_digit_error')))} % of the test digits wrongly as they "
                        f"are and {t(pm(s.get('matched_digit_error')))} % after the best one-to-one "
                        f"relabeling: digits emerge from the pair label, under other names.", '']
        out += self.speed_appendix()
        out += ['= Misclassified pairs',
                figure(image('mistakes', '80%'), 'The misclassified test pairs of the best model in '
                       'one round: true digits, then the predicted ones.', 'mistakes'), '']
        return out

    def speed_appendix(self):
        bench = self.results.get('bench')
        if not bench:
            return []
        rows = [[m['model'], m['path'], num(m['seconds']), num(m['times_reference']),
                 f"{m['speedup_vs_fp32']:.2f}x", pm(m['summary']['test_error']),
                 ci_text(m['paired_vs_fp32'])] for m in bench['models']]
        out = ['= Speed',
               figure(table(['model', 'path', 's / run', 'x ref.', 'speed-up', 'test error %',
                             'vs fp32 (pp, 95% CI)'], rows),
                      f"Each model and fast path, one thread, against the plain fp32 loop on the "
                      f"same rounds and a course-style reference run of "
                      f"{t(num(self.ref_seconds))} s. {how(bench)}.", 'speed'), '']
        if self.bf16_rows:
            rows = [[name, pm(r32['summary']['test_error']), pm(r['summary']['test_error']),
                     ci_text(diff), f'{gain:.2f}x' if gain else '-']
                    for name, r, r32, diff, gain in self.bf16_rows]
            on = self.results['bf16_on']
            out += [figure(table(['model', 'fp32 %', 'bf16 %', 'bf16 - fp32 (pp, 95% CI)',
                                  'speed-up'], rows),
                           f"bfloat16 autocast against float32 on the same rounds; speed-up over "
                           f"channels-last alone. {how(on)}, then with {code('--no_bf16')}.", 'bf16'),
                    '']
        return out


def build_paper(results, pooled, bf16_rows, steps):
    """The typst source of the paper. pooled and bf16_rows: make_report's pooled_best and
    bf16_pairs; steps: the rows of the tuning study that retell how the recipe was found."""
    return Paper(results, pooled, bf16_rows, steps).build()


def compile_pdf(source_path=TYP, pdf_path=PDF):
    """Compiles with typst's own fonts only (the same PDF on any machine); returns the main
    text's last page, or None without the typst package."""
    try:
        import typst
    except ImportError:
        return None
    tmp = pdf_path + '.tmp'
    try:
        typst.compile(source_path, output=tmp, root=HERE, ignore_system_fonts=True)
        os.replace(tmp, pdf_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return main_text_pages(source_path)


def main_text_pages(source_path=TYP):
    """The page on which the main text ends (before the appendix)."""
    import typst
    return json.loads(typst.query(source_path, '<main-end>', field='value', one=True, root=HERE,
                                  ignore_system_fonts=True))

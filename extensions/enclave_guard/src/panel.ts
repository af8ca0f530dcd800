/**
 * The Exports side panel: the operator's export requests in this workspace, their state, each
 * file's automated checks and reviewers' decision (two labels), the reviewers' public reasons, the
 * steps the operator may take (send a new version, resubmit, withdraw) and, once released, a link
 * to download each released file. Below them, the operator's sealed runs ("Run on real data…"):
 * each run's notebook, release, submission time and state, the only things shown of a run before
 * its results pass review, and "Withdraw" while it waits.
 *
 * It polls while shown: every 5 s while the server answers; backing off up to a minute while it
 * cannot be reached or fails (5xx), and stopping after four such failures in a row; and not at all
 * once it answers with an error that will not change by asking again (a 4xx, such as the hub's 424
 * for a stopped server). "Retry" asks again. The export requests drive that; the sealed runs are
 * asked for at the same polls, and their own failure is shown in their section without stopping
 * the export requests' updates (a refusal that will not change stops asking for the runs until
 * the panel is asked to refresh).
 */
import { Time } from '@jupyterlab/coreutils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import {
  ApiError,
  IExportFile,
  IExportRequest,
  ISealedRun,
  findingReason,
  getExport,
  listExports,
  listSealedRuns
} from './api';
import {
  element,
  move,
  sendNewVersion,
  stateLabel,
  statusLabel
} from './dialogs';
import { sealedRunStateLabel, withdrawRun } from './sealedRuns';

const REFRESH_MS = 5000;
const MAX_BACKOFF_MS = 60000;
/** Consecutive failures to reach the server after which the panel stops asking (until "Retry"). */
const MAX_FAILURES = 4;

const OPEN_STATES = new Set(['submitted', 'in_review', 'returned']);

/** An error that asking again will not change: a 4xx other than a time-out or "too many". */
function refusedForGood(error: any): boolean {
  const status = error instanceof ApiError ? error.status : undefined;
  return (
    status !== undefined &&
    status >= 400 &&
    status < 500 &&
    status !== 408 &&
    status !== 429
  );
}

function label(kind: string, value: string, text: string): HTMLElement {
  const node = element(
    'span',
    `enclave-label enclave-label-${kind} enclave-${kind}-${value.replace(/[^a-z_]/g, '')}`,
    text
  );
  node.dataset.value = value;
  return node;
}

export class ExportsPanel extends Widget {
  private readonly list: HTMLElement;
  private readonly status: HTMLElement;
  private readonly empty: HTMLElement;
  private timer: number | undefined;
  private delay = REFRESH_MS;
  private failures = 0;
  private stopped = false;
  private focused: string | null = null;
  private requests: IExportRequest[] = [];
  private readonly sealedRuns: HTMLElement;
  private readonly runList: HTMLElement;
  private readonly runsStatus: HTMLElement;
  private runs: ISealedRun[] = [];
  /** Why the sealed runs could not be listed at the last poll ('' when they were). */
  private runsError = '';
  /** The sealed runs were refused in a way asking again will not change: not asked at polls. */
  private runsRefused = false;
  /** Scroll to the sealed runs once they are listed (after "Run on real data…"). */
  private showRuns = false;

  constructor(private readonly trans: TranslationBundle) {
    super();
    this.addClass('enclave-exports');
    const heading = element('h2', '', trans.__('Exports'));
    this.status = element('div', 'enclave-exports-status');
    this.status.setAttribute('role', 'status');
    this.empty = element('div', 'enclave-exports-empty');
    this.empty.append(
      element('p', '', trans.__('No export requests yet.')),
      element(
        'p',
        '',
        trans.__(
          'Results leave the workspace only through export review: right-click a file in the file browser and choose "Request export…". Your requests, their checks and the reviewers\' decisions appear here.'
        )
      )
    );
    this.empty.hidden = true;
    this.list = element('ol', 'enclave-exports-list');
    // Shown once the operator has sealed runs in this workspace (or they cannot be listed).
    this.sealedRuns = element('section', 'enclave-sealed-runs');
    this.runList = element('ol', 'enclave-sealed-runs-list');
    this.runsStatus = element('p', 'enclave-exports-error');
    this.runsStatus.setAttribute('role', 'status');
    this.sealedRuns.append(
      element('h3', '', trans.__('Sealed runs')),
      element(
        'p',
        'enclave-sealed-runs-note',
        trans.__(
          'Notebooks run on the real data. Only their state is shown here; their results go to export review.'
        )
      ),
      this.runsStatus,
      this.runList
    );
    this.sealedRuns.hidden = true;
    this.node.append(
      heading,
      this.status,
      this.empty,
      this.list,
      this.sealedRuns
    );
  }

  /** Show this request (say, from a link of the review service) at the top of the panel. */
  focusRequest(id: string): void {
    this.focused = id;
    void this.refresh();
  }

  /** Show the sealed runs (a run was just submitted). */
  focusSealedRuns(): void {
    this.showRuns = true;
    void this.refresh();
  }

  protected onAfterShow(): void {
    void this.refresh();
  }

  protected onAfterHide(): void {
    this.cancel();
  }

  dispose(): void {
    this.cancel();
    super.dispose();
  }

  private cancel(): void {
    window.clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(): void {
    this.cancel();
    if (this.isVisible && !this.stopped) {
      this.timer = window.setTimeout(() => void this.poll(), this.delay);
    }
  }

  /** Ask the server now (resuming polling if it had stopped). */
  async refresh(): Promise<void> {
    this.runsRefused = false;
    await this.poll();
  }

  private async poll(): Promise<void> {
    this.cancel();
    if (this.stopped) {
      this.stopped = false;
      this.failures = 0;
      this.delay = REFRESH_MS;
    }
    const [requests, runs] = await Promise.allSettled([
      this.loadRequests(),
      this.runsRefused ? Promise.resolve(this.runs) : listSealedRuns()
    ]);
    if (runs.status === 'fulfilled') {
      this.runs = runs.value;
      this.runsError = this.runsRefused ? this.runsError : '';
    } else {
      this.runsRefused = refusedForGood(runs.reason);
      this.runsError = runs.reason.message;
    }
    this.renderRuns();
    if (requests.status === 'fulfilled') {
      this.requests = requests.value;
      this.render();
      this.showStatus('');
      this.delay = REFRESH_MS;
      this.failures = 0;
    } else {
      const error: any = requests.reason;
      if (refusedForGood(error)) {
        this.stopped = true;
        const message =
          error.status === 424
            ? this.trans.__(
                'Your workspace server has stopped. The panel stopped updating.'
              )
            : this.trans.__(
                'The server refused: %1. The panel stopped updating.',
                error.message
              );
        this.showStatus(message, true);
      } else if (++this.failures >= MAX_FAILURES) {
        this.stopped = true;
        this.showStatus(
          this.trans.__(
            'Cannot reach your workspace server or the export review service (%1); it may have stopped. The panel stopped updating.',
            error.message
          ),
          true
        );
      } else {
        this.delay = Math.min(this.delay * 2, MAX_BACKOFF_MS);
        this.showStatus(
          this.trans.__(
            'Cannot reach the export review service: %1. Trying again in %2 s.',
            error.message,
            Math.round(this.delay / 1000)
          ),
          true
        );
      }
    }
    this.schedule();
  }

  private async loadRequests(): Promise<IExportRequest[]> {
    const requests = await listExports();
    if (this.focused && !requests.some(r => r.id === this.focused)) {
      requests.unshift(await getExport(this.focused));
    }
    return requests;
  }

  private showStatus(message: string, retry = false): void {
    this.status.textContent = message;
    this.status.classList.toggle('enclave-exports-error', !!message);
    if (retry) {
      const button = element(
        'button',
        'jp-mod-styled jp-mod-accept enclave-exports-retry',
        this.trans.__('Retry')
      );
      button.onclick = () => void this.refresh();
      this.status.appendChild(button);
    }
  }

  private render(): void {
    this.list.textContent = '';
    this.empty.hidden = this.requests.length > 0;
    for (const request of this.requests) {
      this.list.appendChild(this.renderRequest(request));
    }
    const focused = this.focused
      ? this.list.querySelector<HTMLElement>(
          `[data-request-id="${CSS.escape(this.focused)}"]`
        )
      : null;
    if (focused) {
      focused.classList.add('enclave-export-focused');
      focused.scrollIntoView({ block: 'nearest' });
    }
  }

  private renderRuns(): void {
    this.runList.textContent = '';
    this.runsStatus.textContent = this.runsError
      ? this.trans.__('Sealed runs cannot be shown: %1', this.runsError)
      : '';
    this.sealedRuns.hidden = !this.runs.length && !this.runsError;
    for (const run of this.runs) {
      this.runList.appendChild(this.renderRun(run));
    }
    if (this.showRuns && this.runs.length) {
      this.showRuns = false;
      this.sealedRuns.scrollIntoView({ block: 'start' });
    }
  }

  private renderRun(run: ISealedRun): HTMLElement {
    const state = run.state.replace(/[^a-z_]/g, '');
    const item = element(
      'li',
      `enclave-sealed-run enclave-sealed-run-${state}`
    );
    item.dataset.runId = run.id;
    const title = element('div', 'enclave-export-title');
    title.append(
      element('span', 'enclave-sealed-run-notebook', run.notebook),
      label('run', run.state, sealedRunStateLabel(this.trans, run))
    );
    item.appendChild(title);
    item.appendChild(
      element(
        'p',
        'enclave-sealed-run-meta',
        this.trans.__(
          'Release %1, submitted %2',
          run.release,
          run.submitted_at ? Time.format(run.submitted_at) : '?'
        )
      )
    );
    if (run.withdrawable) {
      const actions = element('div', 'enclave-export-actions');
      actions.appendChild(
        this.button(
          this.trans.__('Withdraw'),
          'enclave-sealed-run-withdraw',
          () => withdrawRun(this.trans, run, () => void this.refresh())
        )
      );
      item.appendChild(actions);
    }
    return item;
  }

  private renderRequest(request: IExportRequest): HTMLElement {
    const item = element('li', `enclave-export enclave-export-${request.state}`);
    item.dataset.requestId = request.id;
    const title = element('div', 'enclave-export-title');
    title.append(
      element('span', 'enclave-export-name', request.title || request.id),
      label(
        'state',
        request.state,
        stateLabel(this.trans, request.state)
      )
    );
    item.appendChild(title);

    if (request.state === 'returned' && request.returns.length) {
      const last = request.returns[request.returns.length - 1];
      const reason = last.reason || this.trans.__('no reason given');
      item.appendChild(
        element(
          'p',
          'enclave-export-returned',
          last.author
            ? this.trans.__('Returned by %1: %2', last.author, reason)
            : this.trans.__('Returned: %1', reason)
        )
      );
    }

    const files = element('ul', 'enclave-export-files');
    for (const file of request.files) {
      files.appendChild(this.renderFile(request, file));
    }
    item.appendChild(files);

    for (const comment of request.comments || []) {
      item.appendChild(
        element(
          'p',
          'enclave-export-comment',
          `${comment.author ? comment.author + ': ' : ''}${comment.text}`
        )
      );
    }

    const actions = element('div', 'enclave-export-actions');
    const changed = () => void this.refresh();
    if (request.state === 'returned') {
      actions.appendChild(
        this.button(
          this.trans.__('Send a new version'),
          'enclave-export-new-version',
          () => sendNewVersion(this.trans, request, changed)
        )
      );
    }
    if (request.allowed.includes('submitted')) {
      actions.appendChild(
        this.button(this.trans.__('Resubmit'), 'enclave-export-resubmit', () =>
          move(this.trans, request, 'submitted', changed)
        )
      );
    }
    if (request.allowed.includes('withdrawn')) {
      actions.appendChild(
        this.button(this.trans.__('Withdraw'), 'enclave-export-withdraw', () =>
          move(this.trans, request, 'withdrawn', changed)
        )
      );
    }
    const released = request.files.some(f => f.released);
    const link = element(
      'a',
      released ? 'enclave-export-download' : 'enclave-export-open',
      released
        ? this.trans.__('Download released files')
        : this.trans.__('Open in export review')
    );
    link.href = request.page_url;
    link.target = '_blank';
    link.rel = 'noopener';
    actions.appendChild(link);
    item.appendChild(actions);
    return item;
  }

  private renderFile(request: IExportRequest, file: IExportFile): HTMLElement {
    const li = element('li', 'enclave-export-file');
    li.dataset.file = file.name;
    li.appendChild(
      element(
        'span',
        'enclave-export-file-name',
        file.version > 1 ? `${file.name} (v${file.version})` : file.name
      )
    );
    const checks = file.check_status || 'not checked';
    li.appendChild(
      label(
        'checks',
        checks,
        file.check_status
          ? this.trans.__('checks: %1', statusLabel(this.trans, checks))
          : this.trans.__('checks: not checked')
      )
    );
    let decision: string;
    if (file.released) {
      decision = 'released';
    } else if (file.decision) {
      decision = file.decision;
    } else {
      decision = OPEN_STATES.has(request.state) ? 'awaiting' : 'none';
    }
    const decisionText =
      decision === 'awaiting'
        ? this.trans.__('decision: awaiting review')
        : decision === 'none'
          ? this.trans.__('decision: none')
          : this.trans.__('decision: %1', this.decisionLabel(decision));
    li.appendChild(label('decision', decision, decisionText));
    const failing = file.checks.filter(c => c.status !== 'pass');
    if (failing.length) {
      const findings = element('ul', 'enclave-export-findings');
      for (const c of failing) {
        findings.appendChild(
          element(
            'li',
            '',
            `${statusLabel(this.trans, c.status)} · ${c.check}: ${findingReason(c)}`
          )
        );
      }
      li.appendChild(findings);
    }
    for (const comment of file.comments) {
      li.appendChild(
        element(
          'p',
          'enclave-export-reason',
          `${comment.author ? comment.author + ': ' : ''}${comment.text}`
        )
      );
    }
    return li;
  }

  /** A reviewers' decision on a file in the display language; unknown ones as they are. */
  private decisionLabel(decision: string): string {
    switch (decision) {
      case 'approved':
        return this.trans.__('approved');
      case 'rejected':
        return this.trans.__('rejected');
      case 'released':
        return this.trans.__('released');
      case 'changes_requested':
        return this.trans.__('changes requested');
      case 'conflicted':
        return this.trans.__('reviewers disagree');
      case 'pending':
        return this.trans.__('pending');
      default:
        return decision.replace(/_/g, ' ');
    }
  }

  private button(
    text: string,
    className: string,
    action: () => Promise<void>
  ): HTMLButtonElement {
    const button = element('button', `jp-mod-styled ${className}`, text);
    button.onclick = async () => {
      button.disabled = true;
      try {
        await action();
      } finally {
        button.disabled = false;
      }
    };
    return button;
  }
}

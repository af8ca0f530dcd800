/**
 * The dialogs of the way out: request an export, confirm files whose checks fail, send new
 * versions of files of a returned request, resubmit and withdraw.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import {
  IChecks,
  IExportRequest,
  IFileCheck,
  INewVersion,
  checkNewVersions,
  findingReason,
  moveExport,
  runChecks,
  sendNewVersions,
  submitExport
} from './api';

/** A new element with a class and text (as text, never HTML). */
export function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className = '',
  text = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text) {
    node.textContent = text;
  }
  return node;
}

function statusOf(result: IFileCheck | undefined): string {
  return result?.rejected ? 'rejected' : result?.status || 'unknown';
}

/** An export request's state in the display language. */
export function stateLabel(trans: TranslationBundle, state: string): string {
  switch (state) {
    case 'submitted':
      return trans.__('submitted');
    case 'in_review':
      return trans.__('in review');
    case 'returned':
      return trans.__('returned: changes requested');
    case 'approved':
      return trans.__('approved');
    case 'rejected':
      return trans.__('rejected');
    case 'released':
      return trans.__('released');
    case 'withdrawn':
      return trans.__('withdrawn');
    case 'revoked':
      return trans.__('revoked');
    default:
      return state;
  }
}

/** A check status (pass, warn, fail, …) in the display language; unknown ones as they are. */
export function statusLabel(trans: TranslationBundle, status: string): string {
  switch (status) {
    case 'pass':
      return trans.__('pass');
    case 'warn':
      return trans.__('warn');
    case 'fail':
      return trans.__('fail');
    case 'error':
      return trans.__('error');
    case 'rejected':
      return trans.__('rejected');
    case 'unknown':
      return trans.__('unknown');
    default:
      return status;
  }
}

/** The automated checks' results, file by file, as the review service gave them. */
export class ChecksView {
  readonly node: HTMLDivElement;

  constructor(private readonly trans: TranslationBundle) {
    this.node = element(
      'div',
      'enclave-checks',
      trans.__('Running the automated checks…')
    );
  }

  show(checks: IChecks): void {
    this.node.textContent = '';
    const byName = new Map(checks.checks.map(f => [f.name, f] as const));
    for (const file of checks.files) {
      const result = byName.get(file.name);
      const status = statusOf(result);
      const block = element('div', `enclave-check enclave-check-${status}`);
      block.dataset.file = file.name;
      block.appendChild(
        element(
          'strong',
          '',
          this.trans.__('%1: %2', file.name, statusLabel(this.trans, status))
        )
      );
      const findings = element('ul');
      if (result?.rejected) {
        findings.appendChild(element('li', '', result.rejected));
      }
      for (const finding of result?.checks || []) {
        findings.appendChild(
          element(
            'li',
            '',
            `${statusLabel(this.trans, finding.status)} · ${finding.check}: ${findingReason(finding)}${
              finding.location ? ` (${finding.location})` : ''
            }`
          )
        );
      }
      block.appendChild(findings);
      const size = this.trans._n('%1 byte', '%1 bytes', file.size);
      block.appendChild(
        element(
          'small',
          '',
          file.path !== file.name
            ? this.trans.__('SHA-256 %1, %2, from %3', file.sha256, size, file.path)
            : this.trans.__('SHA-256 %1, %2', file.sha256, size)
        )
      );
      this.node.appendChild(block);
    }
  }

  showError(message: string): void {
    this.node.textContent = this.trans.__('The checks could not run: %1', message);
    this.node.className = 'enclave-checks enclave-check-fail';
  }
}

/** The Request export dialog's body: the justification first (it stays in view however many
 * files follow), then the files and their automated checks, scrolled in their own box. */
class RequestBody extends Widget {
  readonly textarea: HTMLTextAreaElement;
  readonly checks: ChecksView;

  constructor(trans: TranslationBundle, paths: string[]) {
    super();
    this.checks = new ChecksView(trans);
    this.addClass('enclave-request');
    const label = element(
      'label',
      'enclave-justification-label',
      trans.__(
        'Justification (required): what is this output, and why must it leave?'
      )
    );
    this.textarea = element('textarea', 'enclave-justification');
    this.textarea.rows = 4;
    label.appendChild(this.textarea);
    const intro = element(
      'p',
      '',
      trans.__(
        'These files go to review. Reviewers see the files, the checks below and your justification; nothing leaves until they approve.'
      )
    );
    const list = element('ul', 'enclave-request-files');
    for (const p of paths) {
      list.appendChild(element('li', '', p));
    }
    const scroller = element('div', 'enclave-request-scroll');
    scroller.append(intro, list, this.checks.node);
    this.node.append(label, scroller);
  }

  getValue(): string {
    return this.textarea.value;
  }
}

/** The files whose checks fail (or that the service refuses outright), with what failed. */
function failing(checks: IChecks): { name: string; problems: string[] }[] {
  return checks.checks
    .filter(f => f.rejected || f.status === 'fail')
    .map(f => ({
      name: f.name,
      problems: f.rejected
        ? [f.rejected]
        : (f.checks || [])
            .filter(c => c.status === 'fail')
            .map(c => `${c.check}: ${findingReason(c)}`)
    }));
}

/**
 * Ask before sending files whose checks failed (or could not run). Resolves true to send anyway.
 */
export async function confirmDespiteChecks(
  trans: TranslationBundle,
  checks: IChecks | Error
): Promise<boolean> {
  const body = element('div', 'enclave-confirm-failing');
  if (checks instanceof Error) {
    body.appendChild(
      element(
        'p',
        '',
        trans.__(
          'The automated checks could not run (%1). Reviewers will see the checks the review service runs on arrival.',
          checks.message
        )
      )
    );
  } else {
    const bad = failing(checks);
    if (!bad.length) {
      return true;
    }
    body.appendChild(
      element(
        'p',
        '',
        trans.__(
          'The automated checks failed for these files. Reviewers will see the failures; a request with failing checks is usually returned or rejected.'
        )
      )
    );
    const list = element('ul');
    for (const file of bad) {
      const li = element('li', 'enclave-failing-file');
      li.appendChild(element('strong', '', file.name));
      const problems = element('ul');
      for (const p of file.problems) {
        problems.appendChild(element('li', 'enclave-failing-check', p));
      }
      li.appendChild(problems);
      list.appendChild(li);
    }
    body.appendChild(list);
  }
  const result = await showDialog({
    title: trans.__('Send despite failing checks?'),
    body: new Widget({ node: body }),
    buttons: [
      Dialog.cancelButton({ label: trans.__('Go back') }),
      Dialog.warnButton({ label: trans.__('Send anyway') })
    ]
  });
  return result.button.accept;
}

/** A message with an OK button. */
export async function tell(
  trans: TranslationBundle,
  title: string,
  body: string
): Promise<void> {
  await showDialog({
    title,
    body,
    buttons: [Dialog.okButton({ label: trans.__('OK') })]
  });
}

/** Request export of `paths`: checks, justification, confirmation of failures, submission. */
export async function requestExport(
  trans: TranslationBundle,
  paths: string[],
  onChange: () => void
): Promise<void> {
  if (!paths.length) {
    await tell(
      trans,
      trans.__('Request export'),
      trans.__('Select one or more files in the file browser first.')
    );
    return;
  }
  let justification = '';
  for (;;) {
    const body = new RequestBody(trans, paths);
    body.textarea.value = justification;
    const checks: Promise<IChecks | Error> = runChecks(paths).then(
      result => {
        body.checks.show(result);
        return result;
      },
      error => {
        body.checks.showError(error.message);
        return error as Error;
      }
    );
    const result = await showDialog({
      title: trans.__('Request export'),
      body,
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.okButton({ label: trans.__('Submit for review') })
      ],
      focusNodeSelector: 'textarea'
    });
    if (!result.button.accept) {
      return;
    }
    justification = (result.value || '').trim();
    if (!justification) {
      await tell(
        trans,
        trans.__('Justification required'),
        trans.__('Say what the output is and why it must leave the workspace.')
      );
      continue;
    }
    if (!(await confirmDespiteChecks(trans, await checks))) {
      continue;
    }
    try {
      const created = await submitExport(paths, justification);
      onChange();
      await tell(
        trans,
        trans.__('Export requested'),
        trans.__(
          'Your export request "%1" was submitted for review (%2). Follow it in the Exports panel.',
          created.title || created.id,
          stateLabel(trans, created.state)
        )
      );
    } catch (error: any) {
      await tell(trans, trans.__('Export request refused'), error.message);
    }
    return;
  }
}

/** The body of "Send a new version": for each file of the request, the file in the home that
 * replaces it (its current path by default; left empty, the file keeps its current version). */
class NewVersionBody extends Widget {
  readonly inputs = new Map<string, HTMLInputElement>();

  constructor(trans: TranslationBundle, request: IExportRequest) {
    super();
    this.addClass('enclave-new-version');
    this.node.appendChild(
      element(
        'p',
        '',
        trans.__(
          'For each file, the file in your home to send as its new version. The server reads it now, as it read the first; clear a path to keep that file as it is. The checks run before anything is sent.'
        )
      )
    );
    const table = element('table', 'enclave-new-version-files');
    for (const file of request.files) {
      const row = element('tr');
      row.dataset.file = file.name;
      row.appendChild(element('td', '', `${file.name} (v${file.version})`));
      const cell = element('td');
      const input = element('input', 'enclave-new-version-path');
      input.type = 'text';
      input.value = file.path;
      input.setAttribute(
        'aria-label',
        trans.__('New version of %1', file.name)
      );
      cell.appendChild(input);
      row.appendChild(cell);
      table.appendChild(row);
      this.inputs.set(file.name, input);
    }
    this.node.appendChild(table);
  }

  getValue(): INewVersion[] {
    return Array.from(this.inputs.entries())
      .map(([name, input]) => ({ name, path: input.value.trim() }))
      .filter(v => v.path);
  }
}

/** "Send a new version" of files of a returned request: choose, check, confirm, send; then offer
 * to resubmit. */
export async function sendNewVersion(
  trans: TranslationBundle,
  request: IExportRequest,
  onChange: () => void
): Promise<void> {
  const chosen = await showDialog({
    title: trans.__('Send a new version: %1', request.title || request.id),
    body: new NewVersionBody(trans, request),
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.okButton({ label: trans.__('Run the checks') })
    ]
  });
  if (!chosen.button.accept) {
    return;
  }
  const versions = chosen.value || [];
  if (!versions.length) {
    await tell(
      trans,
      trans.__('Send a new version'),
      trans.__('No file chosen: nothing was sent.')
    );
    return;
  }
  const view = new ChecksView(trans);
  const checks: IChecks | Error = await checkNewVersions(
    request.id,
    versions
  ).then(
    result => {
      view.show(result);
      return result;
    },
    error => {
      view.showError(error.message);
      return error as Error;
    }
  );
  const reviewed = await showDialog({
    title: trans.__('The new versions, checked'),
    body: new Widget({ node: view.node }),
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.okButton({ label: trans.__('Send') })
    ]
  });
  if (
    !reviewed.button.accept ||
    !(await confirmDespiteChecks(trans, checks))
  ) {
    return;
  }
  let changed: { name: string; version: number }[];
  try {
    changed = (await sendNewVersions(request.id, versions)).changed;
  } catch (error: any) {
    await tell(trans, trans.__('New version refused'), error.message);
    return;
  } finally {
    onChange();
  }
  const body = changed.length
    ? trans.__(
        'Sent: %1. Reviewers see the new versions once you resubmit the request.',
        changed
          .map(c => `${c.name} (v${c.version})`)
          .join(trans.__(', '))
      )
    : trans.__(
        'The files are the same as the versions under review: nothing changed. Reviewers see the new versions once you resubmit the request.'
      );
  const next = await showDialog({
    title: trans.__('New version sent'),
    body,
    buttons: [
      Dialog.cancelButton({ label: trans.__('Later') }),
      Dialog.okButton({ label: trans.__('Resubmit now') })
    ]
  });
  if (next.button.accept) {
    await move(trans, request, 'submitted', onChange);
  }
}

/** Resubmit (`submitted`) or withdraw (`withdrawn`) a request, withdrawal after confirmation. */
export async function move(
  trans: TranslationBundle,
  request: IExportRequest,
  to: 'submitted' | 'withdrawn',
  onChange: () => void
): Promise<void> {
  if (to === 'withdrawn') {
    const sure = await showDialog({
      title: trans.__('Withdraw this export request?'),
      body: trans.__(
        '"%1" leaves review for good: nothing of it is released. To export these files later, request an export again.',
        request.title || request.id
      ),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.warnButton({ label: trans.__('Withdraw') })
      ]
    });
    if (!sure.button.accept) {
      return;
    }
  }
  try {
    await moveExport(request.id, to);
  } catch (error: any) {
    await tell(
      trans,
      to === 'submitted'
        ? trans.__('Resubmission refused')
        : trans.__('Withdrawal refused'),
      error.message
    );
  } finally {
    onChange();
  }
}

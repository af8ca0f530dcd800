/**
 * The dialogs of the way out: request an export, confirm files whose checks fail, send new
 * versions of files of a returned request, resubmit and withdraw.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import {
  IChecks,
  IExportRequest,
  IFileCheck,
  INewVersion,
  checkNewVersions,
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

/** The automated checks' results, file by file, as the review service gave them. */
export class ChecksView {
  readonly node = element('div', 'enclave-checks', 'Running the automated checks…');

  show(checks: IChecks): void {
    this.node.textContent = '';
    const byName = new Map(checks.checks.map(f => [f.name, f] as const));
    for (const file of checks.files) {
      const result = byName.get(file.name);
      const status = statusOf(result);
      const block = element('div', `enclave-check enclave-check-${status}`);
      block.dataset.file = file.name;
      block.appendChild(element('strong', '', `${file.name}: ${status}`));
      const findings = element('ul');
      if (result?.rejected) {
        findings.appendChild(element('li', '', result.rejected));
      }
      for (const finding of result?.checks || []) {
        findings.appendChild(
          element(
            'li',
            '',
            `${finding.status} · ${finding.check}: ${finding.reason}${
              finding.location ? ` (${finding.location})` : ''
            }`
          )
        );
      }
      block.appendChild(findings);
      const from = file.path !== file.name ? ` from ${file.path}` : '';
      block.appendChild(
        element(
          'small',
          '',
          `SHA-256 ${file.sha256}, ${file.size} bytes${from}`
        )
      );
      this.node.appendChild(block);
    }
  }

  showError(message: string): void {
    this.node.textContent = `The checks could not run: ${message}`;
    this.node.className = 'enclave-checks enclave-check-fail';
  }
}

/** The Request export dialog's body: the justification first (it stays in view however many
 * files follow), then the files and their automated checks, scrolled in their own box. */
class RequestBody extends Widget {
  readonly textarea: HTMLTextAreaElement;
  readonly checks = new ChecksView();

  constructor(paths: string[]) {
    super();
    this.addClass('enclave-request');
    const label = element(
      'label',
      'enclave-justification-label',
      'Justification (required): what is this output, and why must it leave?'
    );
    this.textarea = element('textarea', 'enclave-justification');
    this.textarea.rows = 4;
    label.appendChild(this.textarea);
    const intro = element(
      'p',
      '',
      'These files go to review. Reviewers see the files, the checks below and your justification; nothing leaves until they approve.'
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
            .map(c => `${c.check}: ${c.reason}`)
    }));
}

/**
 * Ask before sending files whose checks failed (or could not run). Resolves true to send anyway.
 */
export async function confirmDespiteChecks(
  checks: IChecks | Error
): Promise<boolean> {
  const body = element('div', 'enclave-confirm-failing');
  if (checks instanceof Error) {
    body.appendChild(
      element(
        'p',
        '',
        `The automated checks could not run (${checks.message}). Reviewers will see the checks the review service runs on arrival.`
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
        'The automated checks failed for these files. Reviewers will see the failures; a request with failing checks is usually returned or rejected.'
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
    title: 'Send despite failing checks?',
    body: new Widget({ node: body }),
    buttons: [
      Dialog.cancelButton({ label: 'Go back' }),
      Dialog.warnButton({ label: 'Send anyway' })
    ]
  });
  return result.button.accept;
}

async function tell(title: string, body: string): Promise<void> {
  await showDialog({ title, body, buttons: [Dialog.okButton()] });
}

/** Request export of `paths`: checks, justification, confirmation of failures, submission. */
export async function requestExport(
  paths: string[],
  onChange: () => void
): Promise<void> {
  if (!paths.length) {
    await tell(
      'Request export',
      'Select one or more files in the file browser first.'
    );
    return;
  }
  let justification = '';
  for (;;) {
    const body = new RequestBody(paths);
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
      title: 'Request export',
      body,
      buttons: [
        Dialog.cancelButton(),
        Dialog.okButton({ label: 'Submit for review' })
      ],
      focusNodeSelector: 'textarea'
    });
    if (!result.button.accept) {
      return;
    }
    justification = (result.value || '').trim();
    if (!justification) {
      await tell(
        'Justification required',
        'Say what the output is and why it must leave the workspace.'
      );
      continue;
    }
    if (!(await confirmDespiteChecks(await checks))) {
      continue;
    }
    try {
      const created = await submitExport(paths, justification);
      onChange();
      await tell(
        'Export requested',
        `Your export request "${created.title}" was submitted for review (${created.state}). Follow it in the Exports panel.`
      );
    } catch (error: any) {
      await tell('Export request refused', error.message);
    }
    return;
  }
}

/** The body of "Send a new version": for each file of the request, the file in the home that
 * replaces it (its current path by default; left empty, the file keeps its current version). */
class NewVersionBody extends Widget {
  readonly inputs = new Map<string, HTMLInputElement>();

  constructor(request: IExportRequest) {
    super();
    this.addClass('enclave-new-version');
    this.node.appendChild(
      element(
        'p',
        '',
        'For each file, the file in your home to send as its new version. The server reads it now, as it read the first; clear a path to keep that file as it is. The checks run before anything is sent.'
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
      input.setAttribute('aria-label', `New version of ${file.name}`);
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
  request: IExportRequest,
  onChange: () => void
): Promise<void> {
  const chosen = await showDialog({
    title: `Send a new version: ${request.title || request.id}`,
    body: new NewVersionBody(request),
    buttons: [
      Dialog.cancelButton(),
      Dialog.okButton({ label: 'Run the checks' })
    ]
  });
  if (!chosen.button.accept) {
    return;
  }
  const versions = chosen.value || [];
  if (!versions.length) {
    await tell('Send a new version', 'No file chosen: nothing was sent.');
    return;
  }
  const view = new ChecksView();
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
    title: 'The new versions, checked',
    body: new Widget({ node: view.node }),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Send' })]
  });
  if (!reviewed.button.accept || !(await confirmDespiteChecks(checks))) {
    return;
  }
  let changed: { name: string; version: number }[];
  try {
    changed = (await sendNewVersions(request.id, versions)).changed;
  } catch (error: any) {
    await tell('New version refused', error.message);
    return;
  } finally {
    onChange();
  }
  const what = changed.length
    ? `Sent: ${changed.map(c => `${c.name} (v${c.version})`).join(', ')}.`
    : 'The files are the same as the versions under review: nothing changed.';
  const next = await showDialog({
    title: 'New version sent',
    body: `${what} Reviewers see the new versions once you resubmit the request.`,
    buttons: [
      Dialog.cancelButton({ label: 'Later' }),
      Dialog.okButton({ label: 'Resubmit now' })
    ]
  });
  if (next.button.accept) {
    await move(request, 'submitted', onChange);
  }
}

/** Resubmit (`submitted`) or withdraw (`withdrawn`) a request, withdrawal after confirmation. */
export async function move(
  request: IExportRequest,
  to: 'submitted' | 'withdrawn',
  onChange: () => void
): Promise<void> {
  if (to === 'withdrawn') {
    const sure = await showDialog({
      title: 'Withdraw this export request?',
      body: `"${request.title || request.id}" leaves review for good: nothing of it is released. To export these files later, request an export again.`,
      buttons: [
        Dialog.cancelButton(),
        Dialog.warnButton({ label: 'Withdraw' })
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
      to === 'submitted' ? 'Resubmission refused' : 'Withdrawal refused',
      error.message
    );
  } finally {
    onChange();
  }
}

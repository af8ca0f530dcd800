/**
 * Enclave guard for JupyterLab.
 *
 * The download, open-in-tab, share, export-as, copy-output and print plugins are disabled and
 * locked by the server (page config), which also refuses those channels itself: this extension is
 * the user interface of the one way out, "Request export…", and the Exports panel.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { Dialog, ICommandPalette, showDialog } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

import { IChecks, runChecks, submitExport, uploadPolicy } from './api';
import { ExportsPanel } from './panel';

const COMMAND = 'enclave:request-export';
const PANEL_ID = 'enclave-exports';

const exportIcon = new LabIcon({
  name: 'enclave-guard:export',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24"><path class="jp-icon3" fill="#616161" d="M5 20h14v-2H5v2zm7-16-5.5 5.5 1.4 1.4L11 7.8V16h2V7.8l3.1 3.1 1.4-1.4L12 4z"/></svg>'
});

/** The dialog body: files, their automated check results, and the justification. */
class RequestBody extends Widget {
  readonly textarea: HTMLTextAreaElement;
  private readonly results: HTMLElement;

  constructor(paths: string[]) {
    super();
    this.addClass('enclave-request');
    const intro = document.createElement('p');
    intro.textContent =
      'These files go to review. Reviewers see the files, the checks below and your justification; nothing leaves until they approve.';
    const list = document.createElement('ul');
    list.className = 'enclave-request-files';
    for (const p of paths) {
      const li = document.createElement('li');
      li.textContent = p;
      list.appendChild(li);
    }
    this.results = document.createElement('div');
    this.results.className = 'enclave-checks';
    this.results.textContent = 'Running the automated checks…';
    const label = document.createElement('label');
    label.textContent = 'Justification (required): what is this output, and why must it leave?';
    this.textarea = document.createElement('textarea');
    this.textarea.className = 'enclave-justification';
    this.textarea.rows = 4;
    label.appendChild(this.textarea);
    this.node.append(intro, list, this.results, label);
  }

  showChecks(checks: IChecks): void {
    this.results.textContent = '';
    const byName = new Map(checks.checks.map(f => [f.name, f] as const));
    for (const file of checks.files) {
      const block = document.createElement('div');
      const result = byName.get(file.name);
      const status = result?.rejected
        ? 'rejected'
        : result?.status || 'unknown';
      block.className = `enclave-check enclave-check-${status}`;
      const title = document.createElement('strong');
      title.textContent = `${file.name}: ${status}`;
      block.appendChild(title);
      const findings = document.createElement('ul');
      if (result?.rejected) {
        const li = document.createElement('li');
        li.textContent = result.rejected;
        findings.appendChild(li);
      }
      for (const finding of result?.checks || []) {
        const li = document.createElement('li');
        li.textContent = `${finding.status} · ${finding.check}: ${finding.reason}${
          finding.location ? ` (${finding.location})` : ''
        }`;
        findings.appendChild(li);
      }
      block.appendChild(findings);
      const hash = document.createElement('small');
      hash.textContent = `SHA-256 ${file.sha256}, ${file.size} bytes`;
      block.appendChild(hash);
      this.results.appendChild(block);
    }
  }

  showError(message: string): void {
    this.results.textContent = `The checks could not run: ${message}`;
    this.results.className = 'enclave-checks enclave-check-fail';
  }

  getValue(): string {
    return this.textarea.value;
  }
}

async function requestExport(paths: string[], panel: ExportsPanel) {
  if (!paths.length) {
    await showDialog({
      title: 'Request export',
      body: 'Select one or more files in the file browser first.',
      buttons: [Dialog.okButton()]
    });
    return;
  }
  let justification = '';
  for (;;) {
    const body = new RequestBody(paths);
    body.textarea.value = justification;
    runChecks(paths).then(
      checks => body.showChecks(checks),
      error => body.showError(error.message)
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
      await showDialog({
        title: 'Justification required',
        body: 'Say what the output is and why it must leave the workspace.',
        buttons: [Dialog.okButton()]
      });
      continue;
    }
    try {
      const created = await submitExport(paths, justification);
      await showDialog({
        title: 'Export requested',
        body: `Your export request "${created.title}" was submitted for review (${created.state}). Follow it in the Exports panel.`,
        buttons: [Dialog.okButton()]
      });
      panel.refresh();
    } catch (error: any) {
      await showDialog({
        title: 'Export request refused',
        body: error.message,
        buttons: [Dialog.okButton()]
      });
    }
    return;
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'enclave-guard:exports',
  description: 'Request export… and the Exports panel.',
  autoStart: true,
  requires: [IDefaultFileBrowser, ILabShell],
  optional: [ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    browser: IDefaultFileBrowser,
    shell: ILabShell,
    palette: ICommandPalette | null
  ) => {
    const panel = new ExportsPanel();
    panel.id = PANEL_ID;
    panel.title.icon = exportIcon;
    panel.title.caption = 'Exports';
    shell.add(panel, 'left', { rank: 900 });

    app.commands.addCommand(COMMAND, {
      label: 'Request export…',
      caption: 'Submit the selected files for export review',
      icon: exportIcon,
      execute: () => {
        const paths = Array.from(browser.selectedItems())
          .filter(item => item.type !== 'directory')
          .map(item => item.path);
        return requestExport(paths, panel);
      }
    });
    app.contextMenu.addItem({
      command: COMMAND,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 1
    });
    if (palette) {
      palette.addItem({ command: COMMAND, category: 'Enclave' });
    }

    // Say why an upload is refused before sending it (the server refuses it anyway).
    const policy = uploadPolicy();
    const upload = browser.model.upload.bind(browser.model);
    browser.model.upload = async (file: File, path?: string) => {
      const { suffixes, max_bytes } = await policy;
      const dot = file.name.lastIndexOf('.');
      const suffix = dot > 0 ? file.name.slice(dot).toLowerCase() : '';
      if (!suffixes.includes(suffix)) {
        throw new Error(
          `${file.name}: only notebooks and code or text files can be uploaded (${suffixes.join(' ')}). Data enters a workspace as a release.`
        );
      }
      if (file.size > max_bytes) {
        throw new Error(
          `${file.name}: ${file.size} bytes is over the upload limit of ${max_bytes} bytes.`
        );
      }
      return upload(file, path);
    };
  }
};

export default plugin;

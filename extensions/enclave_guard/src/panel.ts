/**
 * The Exports side panel: the operator's export requests in this workspace, their state, the
 * reviewers' public comments and, once released, a link to download each released file.
 */
import { Widget } from '@lumino/widgets';

import { IExportRequest, listExports } from './api';

const REFRESH_MS = 5000;

export class ExportsPanel extends Widget {
  private readonly list: HTMLElement;
  private readonly status: HTMLElement;
  private timer: number | undefined;

  constructor() {
    super();
    this.addClass('enclave-exports');
    const heading = document.createElement('h2');
    heading.textContent = 'Exports';
    this.status = document.createElement('p');
    this.status.className = 'enclave-exports-status';
    this.list = document.createElement('ol');
    this.list.className = 'enclave-exports-list';
    this.node.append(heading, this.status, this.list);
  }

  protected onAfterShow(): void {
    this.refresh();
    this.timer = window.setInterval(() => this.refresh(), REFRESH_MS);
  }

  protected onAfterHide(): void {
    window.clearInterval(this.timer);
  }

  dispose(): void {
    window.clearInterval(this.timer);
    super.dispose();
  }

  async refresh(): Promise<void> {
    try {
      this.render(await listExports());
      this.status.textContent = '';
    } catch (error: any) {
      this.status.textContent = `Cannot reach the export review service: ${error.message}`;
    }
  }

  private render(requests: IExportRequest[]): void {
    this.list.textContent = '';
    if (!requests.length) {
      this.status.textContent = 'No export requests yet. Right-click a file and choose "Request export…".';
    }
    for (const request of requests) {
      const item = document.createElement('li');
      item.className = `enclave-export enclave-export-${request.state}`;
      item.dataset.requestId = request.id;
      const title = document.createElement('div');
      title.className = 'enclave-export-title';
      title.textContent = `${request.title || request.id} · ${request.state}`;
      item.appendChild(title);
      const files = document.createElement('ul');
      for (const file of request.files) {
        const li = document.createElement('li');
        li.className = 'enclave-export-file';
        const verdict = file.decision || file.check_status;
        li.textContent = verdict ? `${file.name} (${verdict})` : file.name;
        files.appendChild(li);
      }
      item.appendChild(files);
      const link = document.createElement('a');
      link.href = request.page_url;
      link.target = '_blank';
      link.rel = 'noopener';
      const released = request.files.some(f => f.released);
      link.className = released
        ? 'enclave-export-download'
        : 'enclave-export-open';
      link.textContent = released
        ? 'Download released files'
        : 'Open in export review';
      item.appendChild(link);
      for (const comment of request.comments || []) {
        const p = document.createElement('p');
        p.className = 'enclave-export-comment';
        p.textContent = `${comment.author ? comment.author + ': ' : ''}${comment.text}`;
        item.appendChild(p);
      }
      this.list.appendChild(item);
    }
  }
}

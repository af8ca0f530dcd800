/**
 * The server extension's export API (`/enclave/api/exports`). The server reads the files,
 * hashes them and submits them to review; the browser only names them.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IFinding {
  check: string;
  status: string;
  reason: string;
  location?: string;
}

export interface IFileCheck {
  name: string;
  status: string;
  findings: IFinding[];
}

export interface IChecks {
  files: { name: string; path: string; sha256: string; size: number; role: string }[];
  checks: { files?: IFileCheck[] };
}

export interface IExportFile {
  name: string;
  sha256?: string;
  state?: string;
  download_url?: string;
}

export interface IComment {
  author?: string;
  text: string;
  created?: string;
}

export interface IExportRequest {
  id: string;
  state: string;
  created?: string;
  justification?: string;
  files: IExportFile[];
  comments?: IComment[];
}

async function call<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'enclave/api/exports', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let body: any = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = { message: text };
  }
  if (!response.ok) {
    throw new Error(body.message || `HTTP ${response.status}`);
  }
  return body as T;
}

export function runChecks(paths: string[]): Promise<IChecks> {
  return call<IChecks>('checks', {
    method: 'POST',
    body: JSON.stringify({ paths })
  });
}

export function submitExport(
  paths: string[],
  justification: string
): Promise<IExportRequest> {
  return call<IExportRequest>('', {
    method: 'POST',
    body: JSON.stringify({ paths, justification })
  });
}

export async function listExports(): Promise<IExportRequest[]> {
  const body = await call<{ requests: IExportRequest[] }>('');
  return body.requests || [];
}

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

/** The review service's verdict on one file: its findings, or why it was rejected outright. */
export interface IFileCheck {
  name: string;
  status?: string;
  checks?: IFinding[];
  rejected?: string;
}

export interface IChecks {
  files: { name: string; path: string; sha256: string; size: number; role: string }[];
  checks: IFileCheck[];
}

export interface IExportFile {
  name: string;
  sha256: string;
  check_status?: string;
  decision?: string | null;
  released: boolean;
}

export interface IComment {
  author?: string;
  text: string;
  at?: string;
}

export interface IExportRequest {
  id: string;
  title?: string;
  state: string;
  submitted_at?: string;
  /** The request's page in the export review service, where released files are downloaded. */
  page_url: string;
  files: IExportFile[];
  comments: IComment[];
}

async function call<T>(
  path: string,
  init: RequestInit = {},
  base = 'enclave/api/exports'
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, base, path);
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

/** What the server accepts as uploads (it refuses the rest whatever the browser does). */
export interface IUploadPolicy {
  suffixes: string[];
  max_bytes: number;
}

export function uploadPolicy(): Promise<IUploadPolicy> {
  return call<IUploadPolicy>('', {}, 'enclave/api/uploads');
}

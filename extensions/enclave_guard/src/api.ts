/**
 * The server extension's export API (`/enclave/api/exports`). The server reads the files,
 * hashes them and submits them to review; the browser only names them.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IFinding {
  check: string;
  status: string;
  /** The reason's stable code (check.small_cells.below_threshold); absent on older findings. */
  code?: string;
  params?: Record<string, unknown>;
  /** The reason in English, as stored. */
  reason: string;
  /** The reason in the operator's language (the review service's rendering of code and params). */
  message?: string;
  location?: string;
}

/** A finding's reason as the operator reads it: in their language when the service gave it. */
export function findingReason(finding: IFinding): string {
  return finding.message || finding.reason;
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

export interface IComment {
  author?: string;
  text: string;
  at?: string;
}

export interface IExportFile {
  id?: number;
  name: string;
  version: number;
  sha256: string;
  /** Where the current version was read from in the home. */
  path: string;
  check_status?: string;
  checks: IFinding[];
  /** The reviewers' decision on the file, once the request is decided. */
  decision?: string | null;
  /** Reviewers' public comments on this file. */
  comments: IComment[];
  released: boolean;
}

export interface IReturn {
  author?: string;
  reason: string;
  at?: string;
}

export interface IExportRequest {
  id: string;
  title?: string;
  state: string;
  submitted_at?: string;
  context?: string;
  /** The request's page in the export review service, where released files are downloaded. */
  page_url: string;
  /** The states the operator may move it to: "submitted" (resubmit), "withdrawn". */
  allowed: string[];
  files: IExportFile[];
  comments: IComment[];
  /** Why reviewers returned it, oldest first. */
  returns: IReturn[];
}

/** A file of a returned request and the file in the home that replaces it. */
export interface INewVersion {
  name: string;
  path: string;
}

/** An error of the server's API; `status` is undefined when the server could not be reached. */
/** A refusal: its message in the operator's language, and the guard's stable code when it gave one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status?: number,
    readonly code?: string
  ) {
    super(message);
  }
}

async function call<T>(
  path: string,
  init: RequestInit = {},
  base = 'enclave/api/exports'
): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, base, path);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error: any) {
    throw new ApiError(`the server cannot be reached (${error.message})`);
  }
  const text = await response.text();
  let body: any = {};
  try {
    body = text ? JSON.parse(text) : {};
  } catch {
    body = { message: text };
  }
  if (!response.ok) {
    throw new ApiError(
      body.message || `HTTP ${response.status}`,
      response.status,
      body.code
    );
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

export function getExport(id: string): Promise<IExportRequest> {
  return call<IExportRequest>(encodeURIComponent(id));
}

/** The checks for new versions of files of a returned request, before sending them. */
export function checkNewVersions(
  id: string,
  files: INewVersion[]
): Promise<IChecks> {
  return call<IChecks>('checks', {
    method: 'POST',
    body: JSON.stringify({ request: id, files })
  });
}

/** Send new versions of files of a returned request (the server reads them from the home). */
export function sendNewVersions(
  id: string,
  files: INewVersion[]
): Promise<{
  changed: { name: string; version: number }[];
  request: IExportRequest;
}> {
  return call(`${encodeURIComponent(id)}/files`, {
    method: 'POST',
    body: JSON.stringify({ files })
  });
}

/** Resubmit a returned request ("submitted") or withdraw an open one ("withdrawn"). */
export function moveExport(
  id: string,
  to: 'submitted' | 'withdrawn',
  reason = ''
): Promise<IExportRequest> {
  return call<IExportRequest>(`${encodeURIComponent(id)}/transitions`, {
    method: 'POST',
    body: JSON.stringify({ to, reason })
  });
}

/** What the server accepts as uploads (it refuses the rest whatever the browser does). */
export interface IUploadPolicy {
  suffixes: string[];
  max_bytes: number;
}

export function uploadPolicy(): Promise<IUploadPolicy> {
  return call<IUploadPolicy>('', {}, 'enclave/api/uploads');
}

/** Why a sealed run was refused: the data holder's reason, or the error of the notebook's run on
 * the synthetic release. `message` is in the operator's language when the service gave it. */
export interface ISealedRunRefusal {
  code?: string;
  text: string;
  params?: Record<string, unknown>;
  message?: string;
}

/**
 * A sealed run as its operator sees it: never its outcome, duration, error or sizes (those depend
 * on the real data and go to review). `state` is one of queued, awaiting_approval, running, ended,
 * refused, withdrawn.
 */
export interface ISealedRun {
  id: string;
  release: string;
  /** The notebook's path in the home. */
  notebook: string;
  submitted_at: string;
  state: string;
  /** True while the run waits (queued, or awaiting the data holder's approval). */
  withdrawable: boolean;
  refusal?: ISealedRunRefusal | null;
}

/** What "Run on real data…" sends; the server reads the notebook and the inputs from the home. */
export interface ISealedRunRequest {
  release: string;
  notebook: string;
  inputs: string[];
  outputs: string[];
}

const SEALED_RUNS = 'enclave/api/sealed-runs';

/** The releases a sealed run may use in this workspace (none: sealed runs are not offered). */
export async function sealedRunReleases(): Promise<string[]> {
  const body = await call<{ releases: string[] }>('releases', {}, SEALED_RUNS);
  return body.releases || [];
}

export function submitSealedRun(request: ISealedRunRequest): Promise<ISealedRun> {
  return call<ISealedRun>(
    '',
    { method: 'POST', body: JSON.stringify(request) },
    SEALED_RUNS
  );
}

/** The operator's sealed runs in this workspace, newest first. */
export async function listSealedRuns(): Promise<ISealedRun[]> {
  const body = await call<{ runs: ISealedRun[] }>('', {}, SEALED_RUNS);
  return body.runs || [];
}

export function withdrawSealedRun(id: string): Promise<ISealedRun> {
  return call<ISealedRun>(
    `${encodeURIComponent(id)}/withdraw`,
    { method: 'POST' },
    SEALED_RUNS
  );
}

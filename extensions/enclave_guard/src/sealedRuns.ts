/**
 * "Run on real data…": a sealed run of a notebook (issue #18).
 *
 * The operator works on synthetic releases; a sealed run executes one of their notebooks on the
 * real data, in the data holder's domain, and its results leave only through export review. The
 * dialog asks for the release, the outputs to keep and the inputs the notebook reads; the server
 * reads the notebook and the inputs from the home and submits the run. The operator then sees only
 * the run's state in the Exports panel, never anything that depends on the real data.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { PathExt } from '@jupyterlab/coreutils';
import { Contents } from '@jupyterlab/services';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import {
  ISealedRun,
  ISealedRunRequest,
  sealedRunReleases,
  submitSealedRun,
  withdrawSealedRun
} from './api';
import { element, tell } from './dialogs';

/** A sealed run's state in the display language (the refusal's reason comes with "refused"). */
export function sealedRunStateLabel(
  trans: TranslationBundle,
  run: ISealedRun
): string {
  switch (run.state) {
    case 'queued':
      return trans.__('queued');
    case 'awaiting_approval':
      return trans.__('awaiting the data holder\'s approval');
    case 'running':
      return trans.__('running');
    case 'ended':
      return trans.__('ended: results go to review');
    case 'refused':
      return trans.__(
        'refused: %1',
        run.refusal?.message ||
          run.refusal?.text ||
          trans.__('no reason given')
      );
    case 'withdrawn':
      return trans.__('withdrawn');
    default:
      return run.state;
  }
}

/** What the operator chose in the dialog, kept when a refusal sends them back to it. */
interface IChoice {
  release: string;
  outputs: string;
  inputs: Set<string>;
}

/** The dialog's body: what a sealed run is, the release, the outputs to keep, the inputs. */
class SealedRunBody extends Widget {
  private readonly release: HTMLSelectElement;
  private readonly outputs: HTMLTextAreaElement;
  private readonly inputs = new Map<string, HTMLInputElement>();

  constructor(
    trans: TranslationBundle,
    notebook: string,
    releases: string[],
    files: string[] | Error,
    choice: IChoice
  ) {
    super();
    this.addClass('enclave-sealed-run-dialog');
    this.node.appendChild(
      element(
        'p',
        'enclave-sealed-run-explanation',
        trans.__(
          'The notebook runs on the real data of the release, in the data holder\'s domain, with the inputs you tick below. It first runs on the synthetic release: if it fails there, the run is refused with that error. The outputs you list go to export review; until reviewers release them you see only the run\'s state (queued, awaiting approval, running, ended or refused), never its output, errors or duration.'
        )
      )
    );
    this.node.appendChild(
      element(
        'p',
        'enclave-sealed-run-notebook',
        trans.__('Notebook: %1', notebook)
      )
    );

    const releaseLabel = element(
      'label',
      'enclave-sealed-run-field',
      trans.__('Release')
    );
    this.release = element('select', 'enclave-sealed-run-release');
    for (const name of releases) {
      const option = element('option', '', name);
      option.value = name;
      this.release.appendChild(option);
    }
    if (releases.includes(choice.release)) {
      this.release.value = choice.release;
    }
    releaseLabel.appendChild(this.release);

    const outputsLabel = element(
      'label',
      'enclave-sealed-run-field',
      trans.__(
        'Outputs to keep: the files the notebook writes, one path per line, relative to your home (the notebook runs in its own folder)'
      )
    );
    this.outputs = element('textarea', 'enclave-sealed-run-outputs');
    this.outputs.rows = 3;
    this.outputs.value = choice.outputs;
    this.outputs.placeholder = trans.__(
      'for example %1',
      PathExt.join(PathExt.dirname(notebook), trans.__('results/summary.csv'))
    );
    outputsLabel.appendChild(this.outputs);

    const inputs = element('fieldset', 'enclave-sealed-run-inputs');
    inputs.appendChild(
      element(
        'legend',
        '',
        trans.__('Inputs the notebook reads from its folder (code, parameters)')
      )
    );
    if (files instanceof Error) {
      inputs.appendChild(
        element(
          'p',
          'enclave-exports-error',
          trans.__('The notebook\'s folder cannot be listed: %1', files.message)
        )
      );
    } else if (!files.length) {
      inputs.appendChild(
        element(
          'p',
          '',
          trans.__('There are no other files in the notebook\'s folder.')
        )
      );
    }
    for (const path of files instanceof Error ? [] : files) {
      const row = element('label', 'enclave-sealed-run-input');
      const box = element('input');
      box.type = 'checkbox';
      box.checked = choice.inputs.has(path);
      box.dataset.path = path;
      row.append(box, document.createTextNode(PathExt.basename(path)));
      inputs.appendChild(row);
      this.inputs.set(path, box);
    }

    this.node.append(releaseLabel, outputsLabel, inputs);
  }

  getValue(): IChoice {
    return {
      release: this.release.value,
      outputs: this.outputs.value,
      inputs: new Set(
        Array.from(this.inputs.entries())
          .filter(([, box]) => box.checked)
          .map(([path]) => path)
      )
    };
  }
}

/** The files of the notebook's folder an operator may tick as inputs: neither folders, hidden
 * files nor the notebook itself. */
async function folderFiles(
  contents: Contents.IManager,
  notebook: string
): Promise<string[]> {
  const listing = await contents.get(PathExt.dirname(notebook), {
    content: true
  });
  return (listing.content as Contents.IModel[])
    .filter(
      item =>
        item.type !== 'directory' &&
        !item.name.startsWith('.') &&
        item.path !== notebook
    )
    .map(item => item.path)
    .sort();
}

/**
 * "Run on real data…" for `notebook` (its path in the home): choose, submit, and on success hand
 * the new run to `onSubmitted` (the Exports panel opens on its sealed runs). A refusal is shown
 * and the dialog comes back with the choices kept.
 */
export async function runOnRealData(
  trans: TranslationBundle,
  contents: Contents.IManager,
  notebook: string | undefined,
  onSubmitted: (run: ISealedRun) => void
): Promise<void> {
  const title = trans.__('Run on real data');
  if (!notebook) {
    await tell(
      trans,
      title,
      trans.__('Select one notebook (.ipynb) in the file browser first.')
    );
    return;
  }
  let releases: string[];
  try {
    releases = await sealedRunReleases();
  } catch (error: any) {
    await tell(trans, title, error.message);
    return;
  }
  if (!releases.length) {
    await tell(
      trans,
      title,
      trans.__(
        'Sealed runs are not offered in this workspace: none of its releases can be run on the real data.'
      )
    );
    return;
  }
  const files: string[] | Error = await folderFiles(contents, notebook).catch(
    error => error as Error
  );
  let choice: IChoice = {
    release: releases[0],
    outputs: '',
    inputs: new Set()
  };
  for (;;) {
    const result = await showDialog({
      title: trans.__('Run on real data: %1', PathExt.basename(notebook)),
      body: new SealedRunBody(trans, notebook, releases, files, choice),
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.okButton({ label: trans.__('Submit the run') })
      ]
    });
    if (!result.button.accept || !result.value) {
      return;
    }
    choice = result.value;
    const request: ISealedRunRequest = {
      release: choice.release,
      notebook,
      inputs: Array.from(choice.inputs),
      outputs: choice.outputs
        .split('\n')
        .map(line => line.trim())
        .filter(line => line)
    };
    try {
      onSubmitted(await submitSealedRun(request));
      return;
    } catch (error: any) {
      await tell(trans, trans.__('Sealed run refused'), error.message);
    }
  }
}

/** Withdraw a run that has not started, after asking. */
export async function withdrawRun(
  trans: TranslationBundle,
  run: ISealedRun,
  onChange: () => void
): Promise<void> {
  const sure = await showDialog({
    title: trans.__('Withdraw this sealed run?'),
    body: trans.__(
      'The run of "%1" on %2 will not start. To run it later, submit it again.',
      run.notebook,
      run.release
    ),
    buttons: [
      Dialog.cancelButton({ label: trans.__('Cancel') }),
      Dialog.warnButton({ label: trans.__('Withdraw') })
    ]
  });
  if (!sure.button.accept) {
    return;
  }
  try {
    await withdrawSealedRun(run.id);
  } catch (error: any) {
    await tell(trans, trans.__('Withdrawal refused'), error.message);
  } finally {
    onChange();
  }
}

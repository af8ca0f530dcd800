/**
 * Enclave guard for JupyterLab.
 *
 * The download, open-in-tab, share, export-as, copy-output and print plugins are disabled and
 * locked by the server (page config), which also refuses those channels itself: this extension is
 * the user interface of the one way out, "Request export…", and the Exports panel; and of sealed
 * runs, "Run on real data…" on a notebook, followed in the same panel.
 *
 * `<lab URL>?enclave-exports` opens the Exports panel; `?enclave-exports=<request id>` opens it on
 * that request (the review service's request page links there).
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ITranslator } from '@jupyterlab/translation';
import { LabIcon } from '@jupyterlab/ui-components';

import { uploadPolicy } from './api';
import { requestExport } from './dialogs';
import { ExportsPanel } from './panel';
import { runOnRealData } from './sealedRuns';

const COMMAND = 'enclave:request-export';
const SEALED_RUN_COMMAND = 'enclave:run-on-real-data';
const PANEL_ID = 'enclave-exports';
/** `<lab URL>?enclave-exports=<request id>` opens the Exports panel on that request. */
const QUERY = 'enclave-exports';

const exportIcon = new LabIcon({
  name: 'enclave-guard:export',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" viewBox="0 0 24 24"><path class="jp-icon3" fill="#616161" d="M5 20h14v-2H5v2zm7-16-5.5 5.5 1.4 1.4L11 7.8V16h2V7.8l3.1 3.1 1.4-1.4L12 4z"/></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'enclave-guard:exports',
  description: 'Request export…, Run on real data… and the Exports panel.',
  autoStart: true,
  requires: [IDefaultFileBrowser, ILabShell, ITranslator],
  optional: [ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    browser: IDefaultFileBrowser,
    shell: ILabShell,
    translator: ITranslator,
    palette: ICommandPalette | null
  ) => {
    // The display language is the person's choice, stored by the hub (the server's Lab settings).
    const trans = translator.load('enclave_guard');
    const panel = new ExportsPanel(trans);
    panel.id = PANEL_ID;
    panel.title.icon = exportIcon;
    panel.title.caption = trans.__('Exports');
    shell.add(panel, 'left', { rank: 900 });

    app.commands.addCommand(COMMAND, {
      label: trans.__('Request export…'),
      caption: trans.__('Submit the selected files for export review'),
      icon: exportIcon,
      execute: () => {
        const paths = Array.from(browser.selectedItems())
          .filter(item => item.type !== 'directory')
          .map(item => item.path);
        return requestExport(trans, paths, () => void panel.refresh());
      }
    });
    app.contextMenu.addItem({
      command: COMMAND,
      selector: '.jp-DirListing-item[data-isdir="false"]',
      rank: 1
    });

    app.commands.addCommand(SEALED_RUN_COMMAND, {
      label: trans.__('Run on real data…'),
      caption: trans.__(
        'Run the selected notebook on the real data; its results go to export review'
      ),
      execute: () => {
        const notebooks = Array.from(browser.selectedItems()).filter(item =>
          item.path.endsWith('.ipynb')
        );
        return runOnRealData(
          trans,
          app.serviceManager.contents,
          notebooks.length === 1 ? notebooks[0].path : undefined,
          () => {
            shell.activateById(PANEL_ID);
            panel.focusSealedRuns();
          }
        );
      }
    });
    app.contextMenu.addItem({
      command: SEALED_RUN_COMMAND,
      selector: '.jp-DirListing-item[data-file-type="notebook"]',
      rank: 2
    });

    if (palette) {
      palette.addItem({
        command: COMMAND,
        category: trans.__('Enclave'),
        rank: 0
      });
      palette.addItem({
        command: SEALED_RUN_COMMAND,
        category: trans.__('Enclave'),
        rank: 1
      });
    }

    // A link such as the review service's "Open in JupyterLab": show the panel on that request.
    const wanted = new URLSearchParams(window.location.search).get(QUERY);
    if (wanted !== null) {
      void app.restored.then(() => {
        shell.activateById(PANEL_ID);
        if (/^[0-9a-f]{32}$/.test(wanted)) {
          panel.focusRequest(wanted);
        }
      });
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
          trans.__(
            '%1: only notebooks and code or text files can be uploaded (%2). Data enters a workspace as a release.',
            file.name,
            suffixes.join(' ')
          )
        );
      }
      if (file.size > max_bytes) {
        throw new Error(
          trans._n(
            '%2: %1 byte is over the upload limit of %3 bytes.',
            '%2: %1 bytes is over the upload limit of %3 bytes.',
            file.size,
            file.name,
            max_bytes
          )
        );
      }
      return upload(file, path);
    };
  }
};

export default plugin;

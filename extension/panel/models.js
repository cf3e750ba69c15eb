// The model bar: the picker (chat models, with ● for loaded ones; embedding
// and rerank models listed but not selectable), load and unload, and pulling
// a model by URL with its own progress bar.

import { ModelKind, Req } from '../lib/protocol.js';
import { formatBytes, readModels } from '../lib/readers.js';
import { loadSettings } from '../lib/settings.js';
import { settleActivity } from './activity.js';
import { client } from './context.js';
import { refreshStatus } from './status.js';
import { errorText, notice, ui } from './ui.js';

export async function refreshModels() {
  let models;
  try {
    models = readModels(await client.request(Req.ListModels));
  } catch (e) {
    notice(`models: ${errorText(e)}`);
    return;
  }
  const { model: saved } = await chrome.storage.local.get('model');
  const previous = ui.modelSelect.value || saved;
  ui.modelSelect.replaceChildren();
  const chatModels = models.filter((m) => m.kind === ModelKind.Chat);
  const others = models.filter((m) => m.kind !== ModelKind.Chat);
  if (chatModels.length === 0) ui.modelSelect.append(new Option('(no chat model — pull one below)', ''));
  for (const m of chatModels) {
    const label = `${m.loaded ? '● ' : ''}${m.id}${m.sizeBytes ? ` (${formatBytes(m.sizeBytes)})` : ''}`;
    ui.modelSelect.append(new Option(label, m.id));
  }
  if (others.length > 0) {
    const group = document.createElement('optgroup');
    group.label = 'embedding / rerank';
    for (const m of others) {
      const o = new Option(`${m.loaded ? '● ' : ''}${m.id} (${m.kind})`, m.id);
      o.disabled = true;
      group.append(o);
    }
    ui.modelSelect.append(group);
  }
  const pick = chatModels.find((m) => m.id === previous) ?? chatModels.find((m) => m.loaded) ?? chatModels[0];
  if (pick) ui.modelSelect.value = pick.id;
}

/** @param {'LoadModel' | 'UnloadModel'} type */
export async function loadOrUnload(type) {
  const model = ui.modelSelect.value;
  if (!model) return;
  const verb = type === Req.LoadModel ? 'Loading' : 'Unloading';
  notice(`${verb} ${model}…`);
  ui.modelLoad.disabled = ui.modelUnload.disabled = true;
  try {
    const keep = type === Req.LoadModel ? { keep_loaded: (await loadSettings(chrome.storage.local)).keepLoaded } : {};
    await client.request(type, { model, ...keep }, { timeoutMs: 10 * 60_000 });
    notice(`${model}: ${type === Req.LoadModel ? 'loaded' : 'unloaded'}`);
  } catch (e) {
    notice(`${model}: ${errorText(e)}`);
  } finally {
    ui.modelLoad.disabled = ui.modelUnload.disabled = false;
    settleActivity(model);
  }
  await refreshModels();
  await refreshStatus();
}

/** @param {SubmitEvent} ev */
export async function pull(ev) {
  ev.preventDefault();
  const url = ui.pullUrl.value.trim();
  if (!url) return;
  const fields = {
    url,
    ...(ui.pullName.value.trim() ? { model: ui.pullName.value.trim() } : {}),
    ...(ui.pullSha.value.trim() ? { sha256: ui.pullSha.value.trim().toLowerCase() } : {}),
  };
  ui.pullStart.disabled = true;
  ui.pullProgress.hidden = false;
  ui.pullProgress.removeAttribute('value'); // indeterminate until sizes arrive
  ui.pullText.textContent = 'starting…';
  try {
    for await (const msg of client.stream(Req.PullModel, fields, { timeoutMs: 120_000 })) {
      const done = Number(msg.downloaded_bytes ?? msg.downloaded ?? 0);
      const total = Number(msg.total_bytes ?? msg.total ?? 0);
      if (msg.done) {
        ui.pullText.textContent = `done${msg.model ? `: ${msg.model}` : ''}`;
        ui.pullProgress.value = 1;
      } else if (total > 0) {
        ui.pullProgress.value = done / total;
        ui.pullText.textContent = `${formatBytes(done)} / ${formatBytes(total)}`;
      } else if (done > 0) {
        ui.pullText.textContent = formatBytes(done);
      }
    }
    await refreshModels();
  } catch (e) {
    ui.pullText.textContent = errorText(e);
    ui.pullProgress.hidden = true;
  } finally {
    ui.pullStart.disabled = false;
  }
}

// The service worker: owns the one upstream connection to tabagent (native
// messaging if the host answers, else WebRTC through the offscreen document)
// and relays every extension page's requests over it. Listeners are added at
// the top level, as MV3 requires for a worker that can be restarted at will.
// An open native port keeps the worker alive; so does traffic on page ports.

import { TabAgentClient } from './lib/client.js';
import { CONNECTION_KEYS, DEFAULT_SETTINGS, loadSettings, parseSettings } from './lib/settings.js';
import { RELAY_PORT_NAME } from './lib/protocol.js';
import { Relay } from './lib/relay.js';
import { PAGE_PORT_NAME, PageGate } from './lib/page-gate.js';
import { normalizeOrigin } from './lib/page-origins.js';
import { accessFor, noteAsked, syncPageScripts } from './lib/page-sites.js';
import { buildMenus, runCommand, runMenuAction } from './lib/menus.js';
import { TEMPLATES_KEY } from './lib/actions.js';
import { RtcPortBroker, keyFromHost, nativeTransport, webrtcTransport } from './lib/transports.js';

/** @type {import('./lib/settings.js').Settings} */
let settings = { ...DEFAULT_SETTINGS };

const broker = new RtcPortBroker();

const client = new TabAgentClient({
  transports: [
    nativeTransport(chrome),
    webrtcTransport({
      chromeApi: chrome,
      broker,
      // read fresh on every dial, so a just-saved URL or key is used at once;
      // a key typed on the options page wins, else the native host's, if any
      settings: async () => {
        const s = await loadSettings(chrome.storage.local);
        return s.apiKey ? s : { ...s, apiKey: (await keyFromHost(chrome)) ?? '' };
      },
    }),
  ],
  preference: 'auto',
  // pages reconnect on demand; the worker keeps trying only while someone subscribed
  reconnect: 'auto',
  logger: console,
});

const settingsReady = loadSettings(chrome.storage.local).then(
  (s) => {
    settings = s;
    client.setPreference(s.transport);
  },
  (e) => console.warn('tabagent: could not read settings, using defaults', e),
);

const relay = new Relay(client, { ready: settingsReady });

// Web pages (through page-bridge.js) and other extensions reach the page
// API through the gate, which checks the origin Chrome reports for them.
const gate = new PageGate(client, {
  ready: settingsReady,
  access: (origin) => accessFor(chrome, origin),
  pageModel: async () => (await loadSettings(chrome.storage.local)).pageModel,
  onRefused: (origin) => noteAsked(chrome, origin, Date.now()).catch(() => {}),
  onActivity: (tabId, active) => {
    // a badge on the tab's toolbar button while a page uses the model
    chrome.action.setBadgeText({ tabId, text: active ? 'AI' : '' }).catch(() => {});
    if (active) chrome.action.setBadgeBackgroundColor({ tabId, color: '#1a73e8' }).catch(() => {});
  },
});

/** @param {chrome.runtime.Port} port */
function attachPage(port) {
  const sender = port.sender;
  const origin = normalizeOrigin(sender?.origin ?? sender?.url);
  if (!origin || sender?.tab?.id === undefined || sender.id !== chrome.runtime.id) {
    port.disconnect();
    return;
  }
  gate.attach(port, origin, sender.tab.id);
}

chrome.runtime.onConnectExternal.addListener((port) => {
  // another extension: allowed when the user (or the policy) enabled chrome-extension://<its id>
  const origin = port.sender?.id ? normalizeOrigin(`chrome-extension://${port.sender.id}`) : null;
  if (!origin) {
    port.disconnect();
    return;
  }
  gate.attach(port, origin);
});

const syncSites = () => syncPageScripts(chrome).catch((e) => console.warn('tabagent: page API content scripts', e));
syncSites();
chrome.permissions.onAdded.addListener(syncSites);
chrome.permissions.onRemoved.addListener(syncSites);
chrome.storage.onChanged.addListener((changes, area) => {
  if (area === 'managed' || (area === 'local' && 'pageAccess' in changes)) syncSites();
});

chrome.runtime.onConnect.addListener((port) => {
  if (port.name === RELAY_PORT_NAME) {
    relay.attach(port);
  } else if (port.name === PAGE_PORT_NAME) {
    attachPage(port);
  } else if (!broker.offer(port)) {
    port.disconnect(); // nobody else should be connecting to us
  }
});

chrome.storage.onChanged.addListener((changes, area) => {
  if (area !== 'local' || !CONNECTION_KEYS.some((k) => k in changes)) return;
  const before = settings;
  /** @type {Record<string, unknown>} */
  const raw = { ...before };
  for (const [k, v] of Object.entries(changes)) raw[k] = v.newValue;
  settings = parseSettings(raw);
  client.setPreference(settings.transport);
  const status = client.status();
  const signalingChanged = before.serverUrl !== settings.serverUrl || before.apiKey !== settings.apiKey;
  if (signalingChanged && status.transport === 'webrtc') client.reconnect().catch(() => {});
});

// The toolbar button opens the side panel. Clicking it also grants activeTab
// for the current page, which "ask about this page" needs.
chrome.sidePanel.setPanelBehavior({ openPanelOnActionClick: true }).catch((e) => console.warn('tabagent: side panel', e));

// Actions on what the user selects: the context menu and the keyboard command.
chrome.runtime.onInstalled.addListener(() => buildMenus(chrome).catch((e) => console.warn('tabagent: menus', e)));
chrome.storage.onChanged.addListener((changes, area) => {
  if (area === 'local' && TEMPLATES_KEY in changes) buildMenus(chrome).catch((e) => console.warn('tabagent: menus', e));
});
chrome.contextMenus.onClicked.addListener((info, tab) => {
  runMenuAction(chrome, info, tab).catch((e) => console.warn('tabagent: action', e));
});
chrome.commands.onCommand.addListener((command, tab) => {
  runCommand(chrome, command, tab).catch((e) => console.warn('tabagent: command', e));
});
// what a menu click does, for the browser test (a headless browser has no menu to click)
Object.assign(globalThis, { tabagentMenuAction: (/** @type {any} */ info, /** @type {any} */ tab) => runMenuAction(chrome, info, tab) });

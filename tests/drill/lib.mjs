// What the drills share: synthetic residents, the SMS gateway stand-in, the service's
// processes and its HTTP API.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { join, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

// The debug binary `cargo test` built (CARGO_TARGET_DIR honoured), or TEST_OUTREACH_BIN.
const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const target = process.env.CARGO_TARGET_DIR ?? join(root, 'target');
export const bin = process.env.TEST_OUTREACH_BIN ?? join(target, 'debug', 'outreach');

export const COUNTY = '654025000000';
export const PASSWORD = 'Drill-Password-2027';
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// A valid 18-character resident ID (GB 11643 check digit) for a birth date and serial.
export function residentId(birth, serial) {
  const body = `654025${birth}${String(serial).padStart(3, '0')}`;
  const weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body].reduce((acc, d, i) => acc + Number(d) * weights[i], 0);
  return body + '10X98765432'[sum % 11];
}

/// `count` residents from number `first` on, spread over `villages`: distinct IDs (birth day ×
/// serial) and phones, all of migrant type `migrant`.
export function residentsCsv(first, count, villages, migrant) {
  const rows = [];
  for (let n = first; n < first + count; n++) {
    const day = new Date(Date.UTC(1950, 0, 1) + (n % 18000) * 86400000);
    const birth = day.toISOString().slice(0, 10).replaceAll('-', '');
    const serial = Math.floor(n / 18000) % 1000;
    const phone = `139${String(n).padStart(8, '0')}`;
    rows.push(`居民${n},${residentId(birth, serial)},${villages[n % villages.length]},${phone},${migrant}`);
  }
  return `姓名,身份证号,户籍地区划代码,联系电话,流动类型\n${rows.join('\n')}\n`;
}

/// The area CSV of a county with `villages` (12-digit codes) and their townships.
export function areasCsv(villages) {
  const townships = [...new Set(villages.map((v) => `${v.slice(0, 9)}000`))];
  return (
    `区划代码,名称\n${COUNTY},新源县\n` +
    townships.map((t, i) => `${t},镇${i + 1}`).join('\n') +
    '\n' +
    villages.map((v, i) => `${v},村${i + 1}`).join('\n') +
    '\n'
  );
}

/// The database of one run: a fresh SQLite file in `dir`, or — with TEST_DATABASE_URL — a
/// fresh PostgreSQL database named after `label`, dropped by `drop()`.
export function testDatabase(dir, label) {
  const base = process.env.TEST_DATABASE_URL;
  if (!base) return { url: `sqlite://${join(dir, 'outreach.db')}?mode=rwc`, kind: 'sqlite', drop() {} };
  const name = `outreach_test_${label}_${randomBytes(6).toString('hex')}`;
  execFileSync('psql', [base, '-qc', `CREATE DATABASE ${name}`]);
  const url = new URL(base);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    kind: 'postgresql',
    drop: () => execFileSync('psql', [base, '-qc', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`]),
  };
}

/// A port free on the loopback interface now.
export async function freePort() {
  const server = createServer();
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  await new Promise((r) => server.close(r));
  return port;
}

/// The SMS gateway stand-in (Jasmin's HTTP API, checked as Jasmin checks it: its user and
/// password): counts every message it accepts by the outbox key its receipt URL carries and
/// by (recipient, text), answers after `latencyMs`, and then posts a delivery receipt
/// (`DELIVRD`, level 2) to the message's receipt URL, trying again every 2 s for two minutes
/// while the service does not take it, as Jasmin's receipt thrower retries.
/// `failing(share)` answers that share of sends with a transient error (HTTP 503, nothing
/// taken); `refusing(true)` closes its port.
export async function gateway(latencyMs) {
  const byKey = new Map();
  const byText = new Map();
  let accepted = 0;
  let nextId = 1;
  let failShare = 0;
  let transientErrors = 0;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', async () => {
      const form = new URLSearchParams(body);
      if (req.url !== '/send' || form.get('username') !== 'drill' || form.get('password') !== 'drill-pw') {
        res.writeHead(403).end('Error "authentication failed"');
        return;
      }
      if (Math.random() < failShare) {
        transientErrors += 1;
        res.writeHead(503).end('Error "throttled"');
        return;
      }
      const key = new URL(form.get('dlr-url') ?? 'http://x/').searchParams.get('ref') ?? '';
      const text = `${form.get('to')}|${form.get('hex-content')}`;
      byKey.set(key, (byKey.get(key) ?? 0) + 1);
      byText.set(text, (byText.get(text) ?? 0) + 1);
      accepted += 1;
      const id = `drill-${nextId++}`;
      await sleep(latencyMs);
      res.writeHead(200).end(`Success "${id}"`);
      const receiptUrl = form.get('dlr-url');
      if (receiptUrl) deliverReceipt(receiptUrl, id);
    });
  });
  let receiptsTaken = 0;
  let receiptsOnTheWay = 0;
  async function deliverReceipt(url, id) {
    receiptsOnTheWay += 1;
    try {
      await postReceipt(url, id);
    } finally {
      receiptsOnTheWay -= 1;
    }
  }
  async function postReceipt(url, id) {
    const body = new URLSearchParams({ id, message_status: 'DELIVRD', level: '2' });
    for (let attempt = 0; attempt < 60; attempt++) {
      await sleep(attempt === 0 ? 100 : 2000);
      try {
        const answer = await fetch(url, { method: 'POST', body });
        if (answer.ok) {
          receiptsTaken += 1;
          return;
        }
      } catch {
        // The service is down: try again.
      }
    }
  }
  const port = await freePort();
  const listen = () => new Promise((r) => server.listen(port, '127.0.0.1', r));
  await listen();
  return {
    port,
    byKey,
    byText,
    accepted: () => accepted,
    receiptsTaken: () => receiptsTaken,
    receiptsOnTheWay: () => receiptsOnTheWay,
    transientErrors: () => transientErrors,
    failing(share) {
      failShare = share;
    },
    async refusing(refuse) {
      if (refuse) {
        server.closeAllConnections();
        await new Promise((r) => server.close(r));
      } else {
        await listen();
      }
    },
    close: () => {
      server.closeAllConnections();
      server.close();
    },
  };
}

/// The environment of the service for a drill: its database, a fresh data key, the gateway
/// stand-in as its SMS provider, receipts signed with a fresh secret.
export function serviceEnv(databaseUrl, sms, receiptBase, more = {}) {
  return {
    ...process.env,
    DATABASE_URL: databaseUrl,
    OUTREACH_PRIVACY__KEY: randomBytes(32).toString('base64'),
    OUTREACH_LOG__FILTER: 'warn',
    OUTREACH_SCHEDULER__ENABLED: 'false',
    OUTREACH_MESSAGING__SMS_PROVIDER: 'jasmin',
    OUTREACH_MESSAGING__JASMIN__URL: `http://127.0.0.1:${sms.port}`,
    OUTREACH_MESSAGING__JASMIN__USERNAME: 'drill',
    OUTREACH_MESSAGING__JASMIN__PASSWORD: 'drill-pw',
    OUTREACH_MESSAGING__JASMIN__DLR_URL: `${receiptBase}/webhooks/jasmin/dlr`,
    OUTREACH_MESSAGING__WEBHOOKS__SECRET: randomBytes(16).toString('hex'),
    ...more,
  };
}

/// Runs the command line with `env` in `dir`.
export const runner = (env, dir) => (args, input) =>
  execFileSync(bin, args, { env, cwd: dir, input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();

/// A process of the service (`['serve']`, `['dispatch']`) that can be killed and started again.
export function process_(args, env, dir, port) {
  let child;
  let output = '';
  const base = port ? `http://127.0.0.1:${port}` : null;
  return {
    base,
    output: () => output,
    async start() {
      child = spawn(bin, args, {
        env: port ? { ...env, OUTREACH_BIND: `127.0.0.1:${port}` } : env,
        cwd: dir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child.stdout.on('data', (d) => (output += d));
      child.stderr.on('data', (d) => (output += d));
      if (!base) return;
      const started = Date.now();
      for (;;) {
        try {
          if ((await fetch(`${base}/healthz`)).ok) return;
        } catch {}
        if (child.exitCode !== null) throw new Error(`${args[0]} exited:\n${output}`);
        if (Date.now() - started > 60000) throw new Error(`${args[0]} did not start:\n${output}`);
        await sleep(100);
      }
    },
    running: () => child && child.exitCode === null && child.signalCode === null,
    async kill(signal = 'SIGKILL') {
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill(signal);
      await exited;
    },
  };
}

/// One JSON request to `/api/v1{path}` on `base`; a network failure is status 0.
export async function api(base, method, path, token, body) {
  try {
    const response = await fetch(`${base}/api/v1${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body ? { 'content-type': 'application/json' } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
      signal: AbortSignal.timeout(30000),
    });
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      parsed = { text };
    }
    return { status: response.status, body: parsed };
  } catch (error) {
    return { status: 0, body: { error: String(error) } };
  }
}

export async function login(base, username) {
  const answer = await api(base, 'POST', '/auth/login', null, { username, password: PASSWORD });
  if (answer.status !== 200) throw new Error(`login ${username}: ${JSON.stringify(answer.body)}`);
  return answer.body.token;
}

/// Creates and opens this year's campaign (exam window into next year), with quiet hours of
/// one minute half a day away so that messages go out whatever the hour; returns its id.
export async function openCampaign(base, token, extra = {}) {
  const year = new Date().getFullYear();
  const at = new Date(Date.now() + 8 * 3600000 + 12 * 3600000);
  const hhmm = (d) => d.toISOString().slice(11, 16);
  const created = await api(base, 'POST', '/campaigns', token, {
    year,
    phases: {
      exams: { from: `${year}-01-01`, to: `${year + 1}-12-29` },
      catch_up: { from: `${year + 1}-12-30`, to: `${year + 1}-12-30` },
      acceptance: { from: `${year + 1}-12-31`, to: `${year + 1}-12-31` },
    },
    quiet_hours: { start: hhmm(at), end: hhmm(new Date(at.getTime() + 60000)) },
    ...extra,
  });
  if (created.status !== 201) throw new Error(JSON.stringify(created.body));
  const opened = await api(base, 'POST', `/campaigns/${created.body.id}/open`, token);
  if (opened.status !== 200) throw new Error(JSON.stringify(opened.body));
  return created.body.id;
}

/// A day `offset` days from today in Beijing, as YYYY-MM-DD.
export const day = (offset) => new Date(Date.now() + 8 * 3600000 + offset * 86400000).toISOString().slice(0, 10);

// The failure drill on one instance: `outreach serve` sending a wave through an SMS gateway
// stand-in is killed with SIGKILL in the middle of it and started again; a resident import is
// killed half-way and run again. Prints what it found as JSON and exits 1 unless nothing was
// lost, nothing was sent twice and the import was all or nothing.
//
//   node tests/drill/drill.mjs [--residents 5000] [--import-rows 150000] [--lease-secs 30]
//
// On SQLite by default; with TEST_DATABASE_URL on a fresh PostgreSQL database.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  COUNTY, PASSWORD, bin, sleep, residentsCsv, areasCsv, freePort, gateway, serviceEnv, runner,
  process_, api, login, openCampaign, day, testDatabase,
} from './lib.mjs';

const { values: options } = parseArgs({
  options: {
    residents: { type: 'string', default: '5000' },
    'import-rows': { type: 'string', default: '150000' },
    'gateway-ms': { type: 'string', default: '15' },
    // A dead worker's leases run out after this; the default of the service is longer.
    'lease-secs': { type: 'string', default: '30' },
  },
});
const RESIDENTS = Number(options.residents);
const IMPORT_ROWS = Number(options['import-rows']);
const VILLAGES = ['654025100201', '654025100202', '654025100203', '654025100204'];

const dir = mkdtempSync(join(tmpdir(), 'outreach-drill-'));
const db = testDatabase(dir, 'drill');
const sms = await gateway(Number(options['gateway-ms']));
const port = await freePort();
const env = serviceEnv(db.url, sms, `http://127.0.0.1:${port}`, {
  OUTREACH_MESSAGING__OUTBOX__RATE_PER_SECOND__JASMIN: '400',
  OUTREACH_MESSAGING__OUTBOX__LEASE_SECS: options['lease-secs'],
});
const run = runner(env, dir);
const serve = process_(['serve'], env, dir, port);
const base = serve.base;

const report = { database: db.kind, residents: RESIDENTS, lease_secs: Number(options['lease-secs']) };
try {
  writeFileSync(join(dir, 'areas.csv'), areasCsv(VILLAGES));
  run(['import', 'areas', 'areas.csv']);
  run(['user', 'add', '--username', 'office.drill', '--role', 'office', '--area', COUNTY, '--password-stdin'], `${PASSWORD}\n`);
  writeFileSync(join(dir, 'residents.csv'), residentsCsv(0, RESIDENTS, VILLAGES, '疆外'));
  run(['import', 'residents', 'residents.csv']);

  // 1. A wave to every resident; the service is killed when about 40 % has reached the
  // gateway, and started again.
  await serve.start();
  const token = await login(base, 'office.drill');
  const campaign = await openCampaign(base, token);
  const wave = await api(base, 'POST', `/campaigns/${campaign}/waves`, token, {
    name: '演练通知',
    window_from: day(0),
    window_to: day(20),
  });
  if (wave.status !== 201) throw new Error(JSON.stringify(wave.body));
  const planned = wave.body.planned;
  const waveStarted = Date.now();
  while (sms.accepted() < planned * 0.4) {
    if (Date.now() - waveStarted > 120000) throw new Error(`the wave did not start:\n${serve.output()}`);
    await sleep(20);
  }
  await serve.kill();
  report.wave_killed_after_received = sms.accepted();
  await sleep(1000);
  await serve.start();
  const restarted = Date.now();
  let states = {};
  let drained = null;
  let failedAtDrain = 0;
  for (;;) {
    const shown = await api(base, 'GET', `/waves/${wave.body.id}`, token);
    states = shown.body.states ?? {};
    const waiting = (states.queued ?? 0) + (states.scheduled ?? 0) + (states.sending ?? 0);
    if (waiting === 0 && drained === null) {
      drained = (Date.now() - restarted) / 1000;
      failedAtDrain = states.failed ?? 0;
    }
    // Sent but not recorded at the kill, then failed as outcome unknown when their lease ran
    // out: their receipts show they went out. Waits for those to come, and for every receipt
    // still on its way to be taken.
    const settled = (states.failed ?? 0) === 0 && (states.sent ?? 0) === 0 && sms.receiptsOnTheWay() === 0;
    if (waiting === 0 && settled) break;
    if (Date.now() - restarted > 300000) break;
    await sleep(500);
  }
  if (drained === null) throw new Error(`the outbox did not drain: ${JSON.stringify(states)}`);
  report.wave = {
    planned,
    states,
    drained_after_restart_s: drained,
    reached_gateway: sms.byText.size,
    receipts_taken: sms.receiptsTaken(),
    // In flight at the kill: they reached the gateway, but their answer was not recorded, so
    // they were failed as outcome unknown when their lease ran out ...
    outcome_unknown_at_drain: failedAtDrain,
    // ... until their receipts showed they went out.
    outcome_unknown: states.failed ?? 0,
    settled_after_restart_s: (Date.now() - restarted) / 1000,
    // Residents whose message never reached the gateway.
    lost: planned - sms.byText.size,
    sent_twice_same_key: [...sms.byKey.values()].filter((n) => n > 1).length,
    sent_twice_same_text: [...sms.byText.values()].filter((n) => n > 1).length,
  };
  await serve.kill();

  // 2. An import killed at its first progress line (100,000 rows read, none committed yet)
  // leaves nothing; run again, it imports every row.
  writeFileSync(join(dir, 'more.csv'), residentsCsv(RESIDENTS, IMPORT_ROWS, VILLAGES, '本地'));
  const importing = spawn(bin, ['import', 'residents', 'more.csv'], { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const importExited = new Promise((r) => importing.once('exit', (code, signal) => r(signal ?? code)));
  const progressed = (d) => {
    if (String(d).includes('已读取')) importing.kill('SIGKILL');
  };
  importing.stdout.on('data', progressed);
  importing.stderr.on('data', progressed);
  const importEnd = await importExited;
  const again = JSON.parse(run(['import', 'residents', 'more.csv', '--json']));
  report.import = {
    rows: IMPORT_ROWS,
    first_run: importEnd === 'SIGKILL' ? 'killed' : `finished before the kill (${importEnd})`,
    second_run: again,
    all_or_nothing: importEnd === 'SIGKILL' ? again.imported === IMPORT_ROWS && again.unchanged === 0 : null,
  };
  report.refusal_chain_verifies = (() => {
    try {
      run(['refusals', 'verify']);
      return true;
    } catch {
      return false;
    }
  })();
} finally {
  await serve.kill();
  sms.close();
  db.drop();
  rmSync(dir, { recursive: true, force: true });
}

console.log(JSON.stringify(report, null, 2));
const ok =
  report.wave.lost === 0 &&
  report.wave.outcome_unknown === 0 &&
  report.wave.sent_twice_same_key === 0 &&
  report.wave.sent_twice_same_text === 0 &&
  report.import.all_or_nothing === true &&
  report.refusal_chain_verifies;
process.exit(ok ? 0 : 1);

// The failure drill of a county's bad week, on PostgreSQL: three `outreach serve` instances
// and two `outreach dispatch` workers on one database, a wave going out through an SMS
// gateway stand-in, cadres logging attempts, booking groups into days of limited capacity
// and registering refusals through all three instances — while, in order, one `serve` and
// one dispatcher are killed with SIGKILL (and started again after 10 s), PostgreSQL restarts
// (the instances are not restarted), the gateway answers a share of sends with transient
// errors for a while and then refuses connections. Afterwards it checks and prints as JSON:
// messages that never reached the gateway (and those among them failed as "outcome unknown"
// for a person, the sends cut off mid-way), messages that reached it twice, bookings over
// capacity, writes the clients saw acknowledged and the database lacks, the refusal chains,
// the time to drain after the last fault, and the HTTP answers the clients saw by status.
// Exits 1 unless all of those are as they must be.
//
//   node tests/drill/cluster.mjs [--residents 20000] [--cadres 50] [--errors-secs 60] [--refuse-secs 30]
//                                [--rate 100] [--lease-secs 30] [--capacity 20]
//
// It runs PostgreSQL as a cluster of its own (`DRILL_PG_VERSION`/`drill`, port
// `DRILL_PG_PORT`, default 5434), created on first use, so that restarting it touches
// nothing else on the machine; a cluster it started is stopped again at the end.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import {
  COUNTY, PASSWORD, sleep, residentsCsv, areasCsv, freePort, gateway, serviceEnv, runner,
  process_, api, login, openCampaign, day,
} from './lib.mjs';

const { values: options } = parseArgs({
  options: {
    residents: { type: 'string', default: '20000' },
    cadres: { type: 'string', default: '50' },
    'errors-secs': { type: 'string', default: '60' },
    'refuse-secs': { type: 'string', default: '30' },
    'lease-secs': { type: 'string', default: '30' },
    capacity: { type: 'string', default: '20' },
    // Sends per second the service allows itself towards the gateway: low enough that the
    // wave is still going out when the gateway's faults come.
    rate: { type: 'string', default: '100' },
  },
});
const RESIDENTS = Number(options.residents);
const CADRES = Number(options.cadres);
const ERRORS_MS = Number(options['errors-secs']) * 1000;
const REFUSE_MS = Number(options['refuse-secs']) * 1000;
const CAPACITY = Number(options.capacity);

// Villages: two townships, one village per cadre.
const VILLAGES = Array.from({ length: CADRES }, (_, i) => {
  const township = i % 2 === 0 ? '100' : '101';
  return `654025${township}${String(201 + Math.floor(i / 2)).padStart(3, '0')}`;
});

// --- PostgreSQL of its own -------------------------------------------------------------
const PG_VERSION = process.env.DRILL_PG_VERSION ?? readdirSync('/etc/postgresql').sort().at(-1);
const PG_PORT = process.env.DRILL_PG_PORT ?? '5434';
const pgctl = (...args) =>
  execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', PG_VERSION, 'drill', ...args], { stdio: 'pipe' });
function postgres() {
  const clusters = execFileSync('pg_lsclusters', ['-h']).toString();
  if (!clusters.split('\n').some((line) => line.split(/\s+/)[1] === 'drill')) {
    execFileSync('pg_createcluster', [PG_VERSION, 'drill', '--port', PG_PORT, '--', '--auth-local=trust', '--auth-host=trust'], {
      stdio: 'pipe',
    });
  }
  let started = false;
  try {
    pgctl('start');
    started = true;
  } catch {
    // Already running.
  }
  const admin = `postgres://postgres@127.0.0.1:${PG_PORT}/postgres`;
  const name = `outreach_drill_${randomBytes(4).toString('hex')}`;
  for (let i = 0; ; i++) {
    try {
      execFileSync('psql', [admin, '-qc', `CREATE DATABASE ${name}`], { stdio: 'pipe' });
      break;
    } catch (error) {
      if (i > 30) throw error;
      execFileSync('sleep', ['1']);
    }
  }
  const url = `postgres://postgres@127.0.0.1:${PG_PORT}/${name}`;
  return {
    url,
    sql: (query) => execFileSync('psql', [url, '-AtqF', '\t', '-c', query]).toString().trim(),
    restart: () => pgctl('restart', '-m', 'fast'),
    drop: () => {
      execFileSync('psql', [admin, '-qc', `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`], { stdio: 'pipe' });
      // Left as it was found.
      if (started) pgctl('stop');
    },
  };
}

// Messages due and not finished (reminders scheduled for a later day are not due).
const DUE =
  "SELECT count(*) FROM messages WHERE state IN ('queued', 'sending') " +
  "OR (state = 'scheduled' AND next_attempt_at <= now())";

// --- The drill ---------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'outreach-cluster-'));
const db = postgres();
const sms = await gateway(10);
const ports = [await freePort(), await freePort(), await freePort()];
const env = serviceEnv(db.url, sms, `http://127.0.0.1:${ports[0]}`, {
  OUTREACH_MESSAGING__OUTBOX__DISPATCH: 'false',
  OUTREACH_MESSAGING__OUTBOX__LEASE_SECS: options['lease-secs'],
  OUTREACH_MESSAGING__OUTBOX__RATE_PER_SECOND__JASMIN: options.rate,
});
const run = runner(env, dir);
const serves = ports.map((port) => process_(['serve'], env, dir, port));
const dispatchers = [process_(['dispatch'], env, dir), process_(['dispatch'], env, dir)];

// What happened when: faults, and the windows in which an instance or the database was down.
const timeline = [];
const t0 = Date.now();
const mark = (what) => timeline.push({ at_s: (Date.now() - t0) / 1000, what });
const downWindows = [];

// The clients' view: every answer by status (and whether it came while something was down),
// and every write they saw acknowledged.
const answers = {};
const acknowledged = { attempts: new Set(), appointments: new Set(), refusals: new Set() };
function count(what, answer, at) {
  const { status } = answer;
  const down = downWindows.some(([from, to]) => at >= from && at <= (to ?? Infinity) + 2000);
  const code = status >= 400 && status < 500 ? ` ${answer.body?.error?.code ?? ''}` : '';
  const when = status >= 500 || status === 0 ? (down ? ' (while down)' : ' (while up)') : '';
  const key = `${what} ${status}${code}${when}`;
  answers[key] = (answers[key] ?? 0) + 1;
}

/// A write retried as a phone retries it (same client key) until it is answered.
async function write(cadre, what, method, path, body) {
  for (let attempt = 0; attempt < 20; attempt++) {
    const instance = serves[(cadre.turn++ + attempt) % serves.length];
    const answer = await api(instance.base, method, path, cadre.token, body);
    count(what, answer, Date.now());
    if (answer.status === 401 && attempt < 19) {
      cadre.token = await login(instance.base, cadre.username).catch(() => cadre.token);
      continue;
    }
    if (answer.status !== 0 && answer.status < 500) return answer;
    await sleep(500);
  }
  return { status: 0 };
}

const report = { residents: RESIDENTS, cadres: CADRES, capacity_per_day: CAPACITY };
// Each signature differs from the others (the service refuses one copied from another).
let signed = 0;
let stopping = false;
try {
  writeFileSync(join(dir, 'areas.csv'), areasCsv(VILLAGES));
  run(['import', 'areas', 'areas.csv']);
  run(['user', 'add', '--username', 'office.drill', '--role', 'office', '--area', COUNTY, '--password-stdin'], `${PASSWORD}\n`);
  for (let i = 0; i < CADRES; i++) {
    run(['user', 'add', '--username', `cadre.${i}`, '--role', 'cadre', '--area', VILLAGES[i], '--password-stdin'], `${PASSWORD}\n`);
  }
  writeFileSync(join(dir, 'residents.csv'), residentsCsv(0, RESIDENTS, VILLAGES, '疆外'));
  run(['import', 'residents', 'residents.csv']);
  for (const s of serves) await s.start();
  for (const d of dispatchers) await d.start();
  mark('three instances and two dispatchers up');

  const office = await login(serves[0].base, 'office.drill');
  // Two attempts on two days are enough to register a refusal in the drill.
  const campaign = await openCampaign(serves[0].base, office, { refusal_rule: { min_attempts: 2, min_days: 2 } });
  const townships = [...new Set(VILLAGES.map((v) => `${v.slice(0, 9)}000`))];
  const institutions = [];
  for (const [i, township] of townships.entries()) {
    const made = await api(serves[0].base, 'POST', '/institutions', office, {
      code: `DRILL-${i}`,
      name: `演练卫生院${i + 1}`,
      kind: 'township_centre',
      area_code: township,
      daily_capacity: CAPACITY,
      serves: [township],
      address: '演练路1号',
    });
    if (made.status !== 201) throw new Error(JSON.stringify(made.body));
    institutions.push({ id: made.body.id, township });
  }

  // The cadres' residents, as the office lists them.
  const residentsOf = new Map(VILLAGES.map((v) => [v, []]));
  for (const village of VILLAGES) {
    let after = null;
    for (;;) {
      const page = await api(serves[0].base, 'GET', `/residents?area=${village}&limit=500${after ? `&after=${after}` : ''}`, office);
      if (page.status !== 200) throw new Error(JSON.stringify(page.body));
      residentsOf.get(village).push(...page.body.residents.map((r) => r.id));
      if (!page.body.next_after) break;
      after = page.body.next_after;
    }
  }

  // The wave to every resident.
  const wave = await api(serves[0].base, 'POST', `/campaigns/${campaign}/waves`, office, {
    name: '演练通知',
    window_from: day(0),
    window_to: day(20),
  });
  if (wave.status !== 201) throw new Error(JSON.stringify(wave.body));
  mark(`wave of ${wave.body.planned} planned`);

  // 50 cadres at work through all three instances.
  const cadres = await Promise.all(
    VILLAGES.map(async (village, i) => ({
      username: `cadre.${i}`,
      village,
      token: await login(serves[i % 3].base, `cadre.${i}`),
      turn: i,
      institution: institutions.find((x) => x.township === `${village.slice(0, 9)}000`).id,
    })),
  );
  const work = cadres.map(async (cadre) => {
    const mine = residentsOf.get(cadre.village);
    let next = 0;
    // Each round takes up to four residents: an attempt, a group of two, a refusal.
    while (!stopping && next + 4 <= mine.length) {
      const key = () => randomBytes(8).toString('hex');
      const resident = mine[next++];
      const attemptPath = `/campaigns/${campaign}/residents/${resident}/attempts`;
      const attempted = await write(cadre, 'attempt', 'POST', attemptPath, {
        channel: 'phone_call', contact: 'own_phone', outcome: 'no_answer', client_key: key(),
      });
      if (attempted.status === 201) acknowledged.attempts.add(attempted.body.id);
      if (next % 4 === 0) {
        // A group of two into a day; a full day is answered 409 with other days.
        const group = [mine[next++], mine[next++]];
        const booked = await write(cadre, 'booking', 'POST', `/campaigns/${campaign}/bookings`, {
          institution_id: cadre.institution, day: day(1 + (next % 5)), resident_ids: group, client_key: key(),
        });
        if (booked.status === 201) for (const a of booked.body.appointments ?? []) acknowledged.appointments.add(a.id);
      }
      if (next % 10 === 0) {
        // Two attempts on two days, then the refusal with a signature.
        const refuser = mine[next++];
        const path = `/campaigns/${campaign}/residents/${refuser}/attempts`;
        const yesterday = new Date(Date.now() - 86400000).toISOString();
        const first = await write(cadre, 'attempt', 'POST', path, {
          attempted_at: yesterday, channel: 'home_visit', contact: 'in_person', outcome: 'reached_refused', client_key: key(),
        });
        const second = await write(cadre, 'attempt', 'POST', path, {
          channel: 'home_visit', contact: 'in_person', outcome: 'reached_refused', client_key: key(),
        });
        for (const a of [first, second]) if (a.status === 201) acknowledged.attempts.add(a.body.id);
        signed += 1;
        const refused = await write(cadre, 'refusal', 'POST', `/campaigns/${campaign}/residents/${refuser}/refusals`, {
          reason: 'unwilling', signer_name: '本人', signer_relation: 'self', client_key: key(),
          signature_strokes: {
            width: 400,
            height: 150,
            strokes: [[[20, 110], [80 + (signed % 40), 30], [140, 120 - (Math.floor(signed / 40) % 40)], [200, 40], [260, 115], [320, 35], [380, 100]]],
          },
        });
        if (refused.status === 201) acknowledged.refusals.add(refused.body.id);
      }
      await sleep(200);
    }
  });

  // The faults, in order.
  await sleep(10000);
  mark('SIGKILL serve 1 and dispatcher 1');
  downWindows.push([Date.now(), null]);
  await serves[1].kill();
  await dispatchers[0].kill();
  await sleep(10000);
  await serves[1].start();
  await dispatchers[0].start();
  downWindows.at(-1)[1] = Date.now();
  mark('serve 1 and dispatcher 1 started again');
  await sleep(10000);
  mark('PostgreSQL restarts');
  downWindows.push([Date.now(), null]);
  db.restart();
  downWindows.at(-1)[1] = Date.now();
  mark('PostgreSQL back');
  await sleep(10000);
  mark('gateway: 30 % transient errors');
  sms.failing(0.3);
  await sleep(ERRORS_MS);
  sms.failing(0);
  mark('gateway refuses connections');
  await sms.refusing(true);
  await sleep(REFUSE_MS);
  await sms.refusing(false);
  const lastFault = Date.now();
  mark('gateway back: last fault over');
  stopping = true;
  await Promise.all(work);
  mark('cadres stopped');

  // Drained: nothing waits in the outbox.
  let waiting;
  for (;;) {
    waiting = Number(db.sql(DUE));
    if (waiting === 0) break;
    if (Date.now() - lastFault > 600000) break;
    await sleep(1000);
  }
  report.drained_after_last_fault_s = waiting === 0 ? (Date.now() - lastFault) / 1000 : null;
  mark(waiting === 0 ? 'outbox drained' : `outbox not drained: ${waiting} waiting`);
  // Sent but not recorded when their dispatcher died, then failed as outcome unknown when
  // its lease ran out: their receipts show they went out. Waits for those to come.
  const unknownKeys = () =>
    db
      .sql("SELECT idempotency_key FROM messages WHERE state = 'failed' AND last_error LIKE 'outcome_unknown%'")
      .split('\n')
      .filter(Boolean);
  report.outcome_unknown_at_drain = unknownKeys().length;
  const drainedAt = Date.now();
  // Only those the gateway had can be recovered; the others never will be. Receipts still on
  // their way, and those that came before their send was recorded (kept, and applied by the
  // dispatchers' next rounds), are waited for too.
  const kept = () => Number(db.sql('SELECT count(*) FROM pending_receipts'));
  while (
    (unknownKeys().some((key) => sms.byKey.has(key)) || kept() > 0 || sms.receiptsOnTheWay() > 0) &&
    Date.now() - drainedAt < 180000
  ) {
    await sleep(1000);
  }
  report.settled_after_last_fault_s = (Date.now() - lastFault) / 1000;

  // What the database holds.
  const rows = db
    .sql(
      "SELECT idempotency_key, state, coalesce(last_error, '') FROM messages " +
        "WHERE NOT (state = 'scheduled' AND next_attempt_at > now())",
    )
    .split('\n')
    .filter(Boolean)
    .map((line) => line.split('\t'));
  const byState = {};
  for (const [, state] of rows) byState[state] = (byState[state] ?? 0) + 1;
  // Failed as "outcome unknown": a send cut off mid-way by a dead worker or a dropped
  // connection, which Jasmin cannot be asked about. Those the gateway had must have been
  // recovered by their receipts; those it never had are left for a person to re-send.
  const isUnknown = ([, state, error]) => state === 'failed' && error.startsWith('outcome_unknown');
  const unknown = rows.filter(isUnknown);
  // Should have gone out and did not: never reached the gateway, not stopped on purpose and
  // not shown to a person as unknown.
  const onPurpose = new Set(['cancelled', 'suppressed', 'expired']);
  const lost = rows.filter((row) => !onPurpose.has(row[1]) && !isUnknown(row) && !sms.byKey.has(row[0]));
  const ids = (query) => new Set(db.sql(query).split('\n').filter(Boolean).map(Number));
  const stored = {
    attempts: ids('SELECT id FROM contact_attempts'),
    appointments: ids('SELECT id FROM appointments'),
    refusals: ids('SELECT id FROM refusal_records'),
  };
  const missing = Object.fromEntries(
    Object.entries(acknowledged).map(([kind, seen]) => [kind, [...seen].filter((id) => !stored[kind].has(id)).length]),
  );
  const over = db.sql(
    `SELECT count(*) FROM (SELECT a.institution_id, a.day, count(*) AS booked, coalesce(d.capacity, i.daily_capacity) AS capacity
       FROM appointments a JOIN institutions i ON i.id = a.institution_id
       LEFT JOIN institution_days d ON d.institution_id = a.institution_id AND d.day = a.day
      WHERE a.status IN ('booked', 'attended')
      GROUP BY a.institution_id, a.day, d.capacity, i.daily_capacity) x WHERE booked > capacity`,
  );
  let chains = true;
  try {
    run(['refusals', 'verify']);
  } catch {
    chains = false;
  }
  Object.assign(report, {
    messages_due: rows.length,
    messages_scheduled_later: Number(db.sql("SELECT count(*) FROM messages WHERE state = 'scheduled' AND next_attempt_at > now()")),
    messages_by_state: byState,
    lost: lost.length,
    lost_examples: lost.slice(0, 5),
    outcome_unknown: unknown.length,
    outcome_unknown_at_gateway: unknown.filter(([key]) => sms.byKey.has(key)).length,
    outcome_unknown_never_at_gateway: unknown.filter(([key]) => !sms.byKey.has(key)).length,
    receipts_taken: sms.receiptsTaken(),
    // Receipts kept because their message was not known yet, still waiting at the end.
    receipts_kept: Number(db.sql('SELECT count(*) FROM pending_receipts')),
    delivered_twice_same_key: [...sms.byKey.values()].filter((n) => n > 1).length,
    delivered_twice_same_text: [...sms.byText.values()].filter((n) => n > 1).length,
    gateway_transient_errors: sms.transientErrors(),
    bookings_over_capacity: Number(over),
    acknowledged: Object.fromEntries(Object.entries(acknowledged).map(([k, v]) => [k, v.size])),
    acknowledged_missing: missing,
    refusal_chains_verify: chains,
    http_answers: answers,
    timeline,
  });
} finally {
  stopping = true;
  for (const p of [...serves, ...dispatchers]) await p.kill();
  sms.close();
  try {
    db.drop();
  } catch {}
  rmSync(dir, { recursive: true, force: true });
}

console.log(JSON.stringify(report, null, 2));
const fiveHundredsWhileUp = Object.entries(report.http_answers ?? {})
  .filter(([k]) => k.endsWith('(while up)'))
  .reduce((n, [, v]) => n + v, 0);
const ok =
  report.lost === 0 &&
  report.outcome_unknown_at_gateway === 0 &&
  report.delivered_twice_same_key === 0 &&
  report.delivered_twice_same_text === 0 &&
  report.bookings_over_capacity === 0 &&
  Object.values(report.acknowledged_missing ?? { x: 1 }).every((n) => n === 0) &&
  report.refusal_chains_verify &&
  report.drained_after_last_fault_s !== null &&
  fiveHundredsWhileUp === 0;
process.exit(ok ? 0 : 1);

// The resident's own appointment link in a real browser: the link arrives in the notice,
// the page shows the appointment (and nothing private), 确认 / 改约 / 退订 work and are seen
// through the API, and an unknown code gets the friendly page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startApp, phone, shot, VILLAGE, TOWNSHIP } from './harness.mjs';

let app;
let office;
let cadre;
const residents = {};

/// `YYYY-MM-DD`, `days` from today in Xinjiang's county time (Asia/Shanghai).
function day(days) {
  const now = new Date(Date.now() + 8 * 3600 * 1000 + days * 86400 * 1000);
  return now.toISOString().slice(0, 10);
}

/// `HH:MM` in Asia/Shanghai, `hours` from now.
function clock(hours) {
  const at = new Date(Date.now() + (8 + hours) * 3600 * 1000);
  return at.toISOString().slice(11, 16);
}

async function until(what, check, ms = 20000) {
  const started = Date.now();
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() - started > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function messages(resident) {
  const response = await app.api('GET', `/residents/${resident}/messages`, office);
  assert.equal(response.status, 200, JSON.stringify(response.body));
  return response.body.items;
}

/// The path of the resident's link, from the notice the service sent.
async function linkOf(resident) {
  const body = await until('the notice with its link', async () => {
    const notice = (await messages(resident)).find(
      (m) => m.kind === 'appointment_notice' && m.body && m.body.includes('/r/'),
    );
    return notice?.body;
  });
  const url = body.match(/https?:\/\/\S+?\/r\/[A-Za-z0-9]{12}/)[0];
  assert.ok(url.startsWith(app.base), url);
  return new URL(url).pathname;
}

before(async () => {
  app = await startApp(
    [
      ['张伟', VILLAGE, '13899001122'],
      ['玛依拉·胡安', VILLAGE, '13899001123'],
    ],
    {
      publicUrl: true,
      settings: {
        MESSAGING__OUTBOX__REMINDERS__NOTICE_AT: '00:00',
        MESSAGING__OUTBOX__REMINDERS__SAME_DAY_AT: '00:00',
        MESSAGING__OUTBOX__POLL_MS: '100',
        MESSAGING__OUTBOX__HOTLINE: '0999-5123456',
      },
    },
  );
  office = await app.token('office.li');
  cadre = await app.token('cadre.ma');
  const year = new Date().getFullYear();
  const created = await app.api('POST', '/campaigns', office, {
    year,
    // Quiet hours well away from now, so the notices go at once.
    quiet_hours: { start: clock(6), end: clock(7) },
    phases: {
      exams: { from: `${year}-01-01`, to: `${year + 1}-12-29` },
      catch_up: { from: `${year + 1}-12-30`, to: `${year + 1}-12-30` },
      acceptance: { from: `${year + 1}-12-31`, to: `${year + 1}-12-31` },
    },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const campaign = created.body.id;
  const opened = await app.api('POST', `/campaigns/${campaign}/open`, office);
  assert.equal(opened.status, 200, JSON.stringify(opened.body));
  const institution = await app.api('POST', '/institutions', office, {
    code: 'XY-WSY',
    name: '新源镇卫生院',
    kind: 'township_centre',
    area_code: TOWNSHIP,
    daily_capacity: 30,
    serves: [TOWNSHIP],
    address: '新源镇团结路18号',
  });
  assert.equal(institution.status, 201, JSON.stringify(institution.body));
  const found = await app.api('GET', '/residents', cadre);
  for (const r of found.body.residents) residents[r.name] = { id: r.id };
  for (const name of ['张伟', '玛依拉·胡安']) {
    const booked = await app.api('POST', `/campaigns/${campaign}/bookings`, cadre, {
      institution_id: institution.body.id,
      day: day(1),
      resident_ids: [residents[name].id],
    });
    assert.equal(booked.status, 201, JSON.stringify(booked.body));
    residents[name].appointment = booked.body.appointments[0].id;
  }
  for (const name of ['张伟', '玛依拉·胡安']) residents[name].link = await linkOf(residents[name].id);
});

after(async () => {
  await app?.stop();
});

test('the resident confirms and then moves the appointment to a free day', async () => {
  const { browser, page } = await phone();
  try {
    const response = await page.goto(`${app.base}${residents['张伟'].link}`);
    assert.equal(response.status(), 200);
    const text = await page.locator('main').innerText();
    for (const shown of ['张*', '新源镇卫生院', '新源镇团结路18号', '空腹', '身份证', '已预约']) {
      assert.ok(text.includes(shown), `${shown} is not on the page`);
    }
    const html = await page.content();
    assert.ok(!html.includes('张伟'), 'the full name is on the page');
    for (const id of app.ids) assert.ok(!html.includes(id), 'a full ID number is on the page');
    assert.ok(!html.includes('13899001122') && !html.includes('138****1122'), 'the phone is on the page');
    await shot(page, 'link');

    await Promise.all([page.waitForURL(/done=confirmed/), page.getByTestId('link-confirm').click()]);
    assert.match(await page.getByTestId('link-done').innerText(), /已确认/);
    assert.match(await page.getByTestId('link-status').innerText(), /已确认/);
    assert.equal(await page.getByTestId('link-confirm').count(), 0);
    await shot(page, 'link-confirmed');

    // Another day with free places, from the list the page offers.
    const options = await page.getByTestId('link-day').locator('option').evaluateAll((os) => os.map((o) => o.value));
    assert.ok(options.length > 0);
    assert.ok(!options.includes(day(1)), 'the current day is offered');
    const chosen = options[1] ?? options[0];
    await page.getByTestId('link-day').selectOption(chosen);
    await Promise.all([page.waitForURL(/done=moved/), page.getByTestId('link-reschedule').click()]);
    assert.match(await page.getByTestId('link-done').innerText(), /已改约/);
    await shot(page, 'link-rescheduled');

    const appointment = await app.api('GET', `/appointments/${residents['张伟'].appointment}`, cadre);
    assert.equal(appointment.status, 200);
    assert.equal(appointment.body.day, chosen);
    assert.equal(appointment.body.status, 'booked');
    // The confirmation of the new day goes out, with the link again.
    await until('the reschedule confirmation', async () =>
      (await messages(residents['张伟'].id)).find(
        (m) => m.kind === 'reschedule_confirmation' && m.body?.includes(residents['张伟'].link),
      ),
    );
  } finally {
    await browser.close();
  }
});

test('the resident opts out and no later message is sent', async () => {
  const { browser, page } = await phone();
  const resident = residents['玛依拉·胡安'];
  try {
    await page.goto(`${app.base}${resident.link}`);
    assert.ok((await page.locator('main').innerText()).includes('玛**'));
    await Promise.all([page.waitForURL(/done=opted_out/), page.getByTestId('link-optout').click()]);
    assert.match(await page.getByTestId('link-done').innerText(), /已退订/);
    assert.equal(await page.getByTestId('link-optout').count(), 0);
    await shot(page, 'link-opted-out');
  } finally {
    await browser.close();
  }
  // The opt-out is confirmed once; a message planned after it is held back.
  await until('the opt-out confirmation', async () =>
    (await messages(resident.id)).find((m) => m.kind === 'opt_out_confirmation' && m.state !== 'queued'),
  );
  const moved = await app.api('POST', `/appointments/${resident.appointment}/reschedule`, cadre, { day: day(5) });
  assert.equal(moved.status, 200, JSON.stringify(moved.body));
  const later = await until('the later message to be decided', async () =>
    (await messages(resident.id)).find(
      (m) => m.kind === 'reschedule_confirmation' && !['queued', 'sending'].includes(m.state),
    ),
  );
  assert.equal(later.state, 'suppressed', JSON.stringify(later));
  assert.ok(!later.body, 'a suppressed message has no text sent');
});

test('an unknown code gets the friendly page', async () => {
  const { browser, page } = await phone();
  try {
    const response = await page.goto(`${app.base}/r/AAAAAAAAAAAA`);
    assert.equal(response.status(), 404);
    assert.match(await page.getByTestId('link-gone').innerText(), /链接不完整或有误/);
    assert.match(await page.locator('h1').innerText(), /没有找到您的预约/);
    await shot(page, 'link-unknown');
  } finally {
    await browser.close();
  }
});

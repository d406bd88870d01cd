// Booking on the cadre's phone: a day with free places for one resident or a group, moving
// and cancelling it, bookings made without a network (kept on the phone, sent once), a queued
// booking whose day filled up meanwhile, the tasks page and tap-to-call.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startApp, phone, shot, signIn, openCampaign, controlled, pending, residentNamed,
  VILLAGE, TOWNSHIP,
} from './harness.mjs';

let app;
let campaign;
let clinic;

before(async () => {
  app = await startApp([
    ['王芳', VILLAGE, '13899002201'],
    ['刘洋', VILLAGE, '13899002202'],
    ['古丽娜尔·托合提', VILLAGE, '13899002203'],
    ['马军', VILLAGE, ''],
    ['赵磊', VILLAGE, ''],
    ['孙丽', VILLAGE, ''],
  ]);
  campaign = await openCampaign(app);
  const office = await app.token('office.li');
  const made = await app.api('POST', '/institutions', office, {
    code: 'XY-WSY',
    name: '新源镇卫生院',
    kind: 'township_centre',
    area_code: TOWNSHIP,
    daily_capacity: 5,
    serves: [TOWNSHIP],
    address: '新源镇团结路18号',
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  clinic = made.body.id;
});

after(async () => {
  await app?.stop();
});

/// A day from today, as YYYY-MM-DD in the service's (Beijing) calendar.
function day(offset) {
  const at = new Date(Date.now() + 8 * 3600000 + offset * 86400000);
  return at.toISOString().slice(0, 10);
}

async function appointmentsOf(resident) {
  const office = await app.token('office.li');
  const list = await app.api('GET', `/campaigns/${campaign}/appointments?limit=500`, office);
  assert.equal(list.status, 200, JSON.stringify(list.body));
  return list.body.appointments.filter((a) => a.resident_id === resident);
}

const pickDay = (page, d) => page.locator(`[data-testid=book-day][data-day="${d}"]`).click();

test('a cadre books a resident on a day with places left, then moves and cancels it', async () => {
  const { browser, page } = await phone();
  try {
    await signIn(app, page);
    const wang = await residentNamed(app, '王芳');
    await page.goto(`${app.base}/m/residents/${wang}`);
    await page.getByTestId('open-book').click();
    await page.waitForURL(/\/m\/book\?r=/);
    assert.match(await page.locator('#book-residents').innerText(), /王芳/);
    const cell = page.locator(`[data-testid=book-day][data-day="${day(1)}"]`);
    assert.match(await cell.innerText(), /余 5/);
    await shot(page, 'book');
    await pickDay(page, day(1));
    await Promise.all([page.waitForURL(new RegExp(`/m/residents/${wang}$`)), page.getByTestId('book-submit').click()]);
    let booked = await appointmentsOf(wang);
    assert.equal(booked.length, 1);
    assert.equal(booked[0].day, day(1));
    assert.equal(booked[0].status, 'booked');
    await page.reload();
    assert.equal(await page.getByTestId('resident-stage').textContent(), '已预约');
    await shot(page, 'resident-booked');

    // Moved to the day after: the page shows the new day, the old day has its place back.
    await page.getByTestId('appointment-reschedule').click();
    await page.waitForURL(/appointment=/);
    assert.match(await page.locator(`[data-testid=book-day][data-day="${day(1)}"]`).innerText(), /余 4/);
    await pickDay(page, day(2));
    await Promise.all([page.waitForURL(new RegExp(`/m/residents/${wang}$`)), page.getByTestId('book-submit').click()]);
    booked = await appointmentsOf(wang);
    assert.equal(booked.length, 1);
    assert.equal(booked[0].day, day(2));
    assert.match(await page.getByTestId('appointments').innerText(), new RegExp(day(2)));

    page.once('dialog', (dialog) => dialog.accept());
    await Promise.all([page.waitForEvent('load'), page.getByTestId('appointment-cancel').click()]);
    booked = await appointmentsOf(wang);
    assert.equal(booked[0].status, 'cancelled');
    assert.match(await page.getByTestId('appointments').innerText(), /已取消/);
  } finally {
    await browser.close();
  }
});

test('a group is ticked on the worklist and booked together', async () => {
  const { browser, page } = await phone();
  try {
    await signIn(app, page);
    for (const name of ['马军', '赵磊']) {
      await page.getByTestId('worklist-item').filter({ hasText: name }).getByTestId('worklist-pick').check();
    }
    await shot(page, 'worklist-picked');
    await Promise.all([page.waitForURL(/\/m\/book\?r=\d+,\d+/), page.getByTestId('book-group').click()]);
    assert.match(await page.locator('#book-residents').innerText(), /马军[\s\S]*赵磊|赵磊[\s\S]*马军/);
    await pickDay(page, day(3));
    await Promise.all([page.waitForURL(/\/m\/$/), page.getByTestId('book-submit').click()]);
    for (const name of ['马军', '赵磊']) {
      const booked = await appointmentsOf(await residentNamed(app, name));
      assert.equal(booked.length, 1, name);
      assert.equal(booked[0].day, day(3));
    }
  } finally {
    await browser.close();
  }
});

test('offline, an attempt and a booking wait on the phone through a reload and reach the server once', async () => {
  const { browser, context, page } = await phone();
  try {
    await signIn(app, page);
    const liu = await residentNamed(app, '刘洋');
    await page.goto(`${app.base}/m/residents/${liu}`);
    await controlled(page);
    // The booking page is kept on the phone from the first visit.
    await page.goto(`${app.base}/m/book`);
    await page.goto(`${app.base}/m/residents/${liu}`);

    await context.setOffline(true);
    await page.getByTestId('attempt-channel').selectOption('home_visit');
    await page.getByTestId('attempt-contact').selectOption('in_person');
    await page.getByTestId('attempt-outcome').selectOption('reached_agreed');
    await page.getByTestId('attempt-submit').click();
    await page.waitForFunction(() => !document.querySelector('[data-testid=sync-pending]').hidden);
    await page.getByTestId('open-book').click();
    await page.waitForURL(/\/m\/book\?r=/);
    assert.match(await page.locator('#book-residents').innerText(), /刘洋/, 'named from the resident page');
    await pickDay(page, day(4));
    await Promise.all([page.waitForURL(new RegExp(`/m/residents/${liu}$`)), page.getByTestId('book-submit').click()]);
    await page.waitForFunction(() => !document.querySelector('[data-testid=sync-pending]').hidden);
    assert.equal(await pending(page), 2);
    await page.reload();
    await page.waitForFunction(() => !document.querySelector('[data-testid=sync-pending]').hidden);
    assert.equal(await pending(page), 2, 'both still queued after a reload offline');
    await shot(page, 'booking-queued-offline');
    assert.equal((await appointmentsOf(liu)).length, 0);

    await context.setOffline(false);
    await page.waitForFunction(() => document.querySelector('[data-testid=sync-pending]').hidden, null, {
      timeout: 20000,
    });
    const booked = await appointmentsOf(liu);
    assert.equal(booked.length, 1);
    assert.equal(booked[0].day, day(4));
    const office = await app.token('office.li');
    const attempts = await app.api('GET', `/campaigns/${campaign}/residents/${liu}/attempts`, office);
    assert.equal(attempts.body.items.length, 1);
    assert.equal(attempts.body.items[0].outcome, 'reached_agreed');
  } finally {
    await browser.close();
  }
});

test('a booking queued for a day that filled up meanwhile is shown with the reason and can be fixed', async () => {
  const { browser, context, page } = await phone();
  try {
    await signIn(app, page);
    const guli = await residentNamed(app, '古丽娜尔·托合提');
    await page.goto(`${app.base}/m/residents/${guli}`);
    await controlled(page);
    await page.goto(`${app.base}/m/book?r=${guli}`);
    await context.setOffline(true);
    await pickDay(page, day(5));
    await Promise.all([page.waitForURL(new RegExp(`/m/residents/${guli}$`)), page.getByTestId('book-submit').click()]);

    // Meanwhile the clinic closes that day.
    const office = await app.token('office.li');
    const changed = await app.api('PUT', `/institutions/${clinic}/calendar/${day(5)}`, office, {
      closed: true,
      note: '设备检修',
    });
    assert.equal(changed.status, 200, JSON.stringify(changed.body));

    await context.setOffline(false);
    const failed = page.getByTestId('sync-failed');
    await failed.waitFor({ timeout: 20000 });
    assert.match(await failed.innerText(), /古丽娜尔·托合提 预约 .+：.*休息/);
    await shot(page, 'booking-refused');
    assert.equal((await appointmentsOf(guli)).length, 0);
    await Promise.all([page.waitForURL(/\/m\/book\?r=/), failed.getByRole('link', { name: '修改' }).click()]);
    await pickDay(page, day(6));
    await Promise.all([page.waitForURL(new RegExp(`/m/residents/${guli}$`)), page.getByTestId('book-submit').click()]);
    const booked = await appointmentsOf(guli);
    assert.equal(booked.length, 1);
    assert.equal(booked[0].day, day(6));
  } finally {
    await browser.close();
  }
});

test('tap-to-call reveals the number as an audited view', async () => {
  const { browser, page } = await phone();
  try {
    await signIn(app, page);
    const wang = await residentNamed(app, '王芳');
    await page.goto(`${app.base}/m/residents/${wang}`);
    assert.ok(!(await page.content()).includes('13899002201'));
    await page.getByTestId('call-phone').click();
    const link = page.getByTestId('call-link');
    await link.waitFor();
    assert.equal(await link.getAttribute('href'), 'tel:13899002201');
    const office = await app.token('office.li');
    const audit = await app.api('GET', `/audit?action=resident.view_pii&entity_id=${wang}`, office);
    assert.equal(audit.status, 200, JSON.stringify(audit.body));
    assert.equal(audit.body.entries.length, 1);
  } finally {
    await browser.close();
  }
});

test('after one visit online, the residents on the worklist open without a network', async () => {
  const { browser, context, page } = await phone();
  try {
    await signIn(app, page);
    await controlled(page);
    const sun = await residentNamed(app, '孙丽');
    // The worklist keeps its residents' pages on the phone in the background.
    const kept = (path) => page.evaluate(async (p) => Boolean(await caches.match(p)), path);
    for (let i = 0; i < 80 && !(await kept(`/m/residents/${sun}`)); i++) {
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(await kept(`/m/residents/${sun}`), 'the resident page is kept on the phone');
    await context.setOffline(true);
    await page.goto(`${app.base}/m/residents/${sun}`);
    assert.ok((await page.locator('h1').first().innerText()).startsWith('孙丽'));
    assert.ok(await page.getByTestId('attempt-submit').isVisible());
    await page.goto(`${app.base}/m/tasks`);
    assert.match(await page.locator('h1').innerText(), /待办任务/);
    await shot(page, 'tasks-offline');
    await context.setOffline(false);
  } finally {
    await browser.close();
  }
});

test('online, a booking the server refuses is answered on the booking page', async () => {
  const { browser, page } = await phone();
  try {
    await signIn(app, page);
    const sun = await residentNamed(app, '孙丽');
    await page.goto(`${app.base}/m/book?r=${sun}`);
    // The clinic closes the day while the cadre is choosing.
    const office = await app.token('office.li');
    const changed = await app.api('PUT', `/institutions/${clinic}/calendar/${day(8)}`, office, { closed: true });
    assert.equal(changed.status, 200, JSON.stringify(changed.body));
    await pickDay(page, day(8));
    await page.getByTestId('book-submit').click();
    const problem = page.getByTestId('book-error');
    await problem.waitFor();
    assert.match(await problem.innerText(), /休息/);
    assert.match(page.url(), /\/m\/book\?r=/, 'still on the booking page');
    assert.equal(await pending(page), 0, 'nothing left waiting');
    await pickDay(page, day(9));
    await Promise.all([page.waitForURL(new RegExp(`/m/residents/${sun}$`)), page.getByTestId('book-submit').click()]);
    const booked = await appointmentsOf(sun);
    assert.equal(booked.length, 1);
    assert.equal(booked[0].day, day(9));
  } finally {
    await browser.close();
  }
});

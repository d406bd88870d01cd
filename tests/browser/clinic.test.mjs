// The clinic's pages in a desktop browser: a township health centre's staff sign in to today's
// and tomorrow's appointments grouped by village, mark one resident attended, record
// another's exam, mark a no-show (the API's appointments and the residents' progress show
// each), record a walk-in's exam by ID number and upload an exam list with a bad row; the
// appointments of another institution are not theirs to see.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startApp, desktop, shot, signIn, openCampaign, residentNamed, residentId, VILLAGE, OTHER_VILLAGE, TOWNSHIP,
} from './harness.mjs';

let app;
let campaign;
let office;
let clinic;
let other;
const people = {};

const NAMES = ['王芳', '刘洋', '马军', '赵磊', '孙丽', '周敏', '吴刚'];

/// A day from today, as YYYY-MM-DD in the service's (Beijing) calendar.
function day(offset) {
  const at = new Date(Date.now() + 8 * 3600000 + offset * 86400000);
  return at.toISOString().slice(0, 10);
}

async function institution(code, name) {
  const made = await app.api('POST', '/institutions', office, {
    code,
    name,
    kind: 'township_centre',
    area_code: TOWNSHIP,
    daily_capacity: 10,
    serves: [TOWNSHIP],
    address: '新源镇团结路18号',
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  return made.body.id;
}

async function book(institutionId, when, names) {
  const made = await app.api('POST', `/campaigns/${campaign}/bookings`, office, {
    institution_id: institutionId,
    day: when,
    resident_ids: names.map((n) => people[n]),
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
}

async function appointmentOf(name) {
  const list = await app.api('GET', `/campaigns/${campaign}/appointments?limit=500`, office);
  assert.equal(list.status, 200, JSON.stringify(list.body));
  return list.body.appointments.find((a) => a.resident_id === people[name]);
}

async function stageOf(name) {
  const progress = await app.api('GET', `/campaigns/${campaign}/residents/${people[name]}`, office);
  assert.equal(progress.status, 200, JSON.stringify(progress.body));
  return progress.body.stage;
}

const row = (page, name) => page.getByTestId('clinic-appointment').filter({ hasText: name });

before(async () => {
  app = await startApp([
    ['王芳', VILLAGE, '13899004401'],
    ['刘洋', VILLAGE, '13899004402'],
    ['马军', OTHER_VILLAGE, '13899004403'],
    ['赵磊', VILLAGE, ''],
    ['孙丽', VILLAGE, ''],
    ['周敏', VILLAGE, ''],
    ['吴刚', VILLAGE, ''],
  ]);
  campaign = await openCampaign(app);
  office = await app.token('office.li');
  for (const name of NAMES) people[name] = await residentNamed(app, name);
  clinic = await institution('XY-WSY', '新源镇卫生院');
  other = await institution('XY-RMYY', '新源县人民医院');
  app.addClinicUser('clinic.zhang', 'XY-WSY');
  // Group bookings: two villages today, one resident tomorrow; another institution today.
  await book(clinic, day(0), ['王芳', '刘洋']);
  await book(clinic, day(0), ['马军']);
  await book(clinic, day(1), ['赵磊']);
  await book(other, day(0), ['吴刚']);
});

after(async () => {
  await app?.stop();
});

test('the clinic marks attendance, an exam and a no-show on today’s list grouped by village', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'clinic.zhang');
    assert.match(page.url(), /\/app\/$/);
    const today = page.locator(`[data-testid=clinic-day][data-day="${day(0)}"]`);
    const villages = today.getByTestId('clinic-village');
    assert.equal(await villages.count(), 2);
    assert.match(await today.locator(`[data-village="${VILLAGE}"]`).innerText(), /阿勒玛勒村[\s\S]*王芳[\s\S]*刘洋|阿勒玛勒村[\s\S]*刘洋[\s\S]*王芳/);
    assert.match(await today.locator(`[data-village="${OTHER_VILLAGE}"]`).innerText(), /托格拉克村[\s\S]*马军/);
    const tomorrow = page.locator(`[data-testid=clinic-day][data-day="${day(1)}"]`);
    assert.match(await tomorrow.innerText(), /赵磊/);
    assert.equal(await tomorrow.getByTestId('clinic-attended').count(), 0, 'tomorrow cannot be attended yet');
    // Another institution's appointment is not listed; ID numbers are masked.
    const html = await page.content();
    assert.ok(!html.includes('吴刚'));
    for (const id of app.ids) assert.ok(!html.includes(id));
    const wang = row(page, '王芳');
    assert.equal(await wang.getAttribute('data-resident-id'), String(people['王芳']));
    assert.equal(await wang.getAttribute('data-appointment-id'), String((await appointmentOf('王芳')).id));
    await shot(page, 'clinic-home');

    await Promise.all([page.waitForURL(/done=attended/), wang.getByTestId('clinic-attended').click()]);
    assert.equal(await row(page, '王芳').getByTestId('clinic-status').innerText(), '已到检');
    await Promise.all([page.waitForURL(/done=examined/), row(page, '刘洋').getByTestId('clinic-examined').click()]);
    assert.equal(await row(page, '刘洋').getByTestId('clinic-status').innerText(), '已到检');
    page.once('dialog', (dialog) => dialog.accept());
    await Promise.all([page.waitForURL(/done=no_show/), row(page, '马军').getByTestId('clinic-noshow').click()]);
    assert.equal(await row(page, '马军').getByTestId('clinic-status').innerText(), '爽约');
    assert.match(await page.getByTestId('clinic-notice').innerText(), /爽约/);
    await shot(page, 'clinic-marked');

    assert.equal((await appointmentOf('王芳')).status, 'attended');
    assert.equal((await appointmentOf('刘洋')).status, 'attended');
    assert.equal((await appointmentOf('马军')).status, 'no_show');
    assert.equal((await appointmentOf('赵磊')).status, 'booked');
    assert.equal(await stageOf('王芳'), 'examined');
    assert.equal(await stageOf('刘洋'), 'examined');
    assert.notEqual(await stageOf('马军'), 'appointed');
    assert.notEqual(await stageOf('马军'), 'examined');
    await page.setViewportSize({ width: 360, height: 800 });
    await shot(page, 'clinic-home-360');
  } finally {
    await browser.close();
  }
});

test('a walk-in is examined by ID number, and an unknown number is said next to the form', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'clinic.zhang');
    const unknown = residentId('19881212', 77);
    await page.getByTestId('walkin-id').fill(unknown);
    const [refused] = await Promise.all([page.waitForNavigation(), page.getByTestId('walkin-submit').click()]);
    assert.equal(refused.status(), 422);
    assert.match(await page.getByTestId('walkin-error').innerText(), /没有找到该居民/);
    assert.equal(await page.getByTestId('walkin-id').inputValue(), unknown);

    const sun = app.ids[NAMES.indexOf('孙丽')];
    await page.getByTestId('walkin-id').fill(sun);
    await Promise.all([page.waitForURL(/done=walk_in/), page.getByTestId('walkin-submit').click()]);
    const notice = await page.getByTestId('clinic-notice').innerText();
    assert.match(notice, /孙丽/);
    assert.ok(!notice.includes(sun), 'the ID number is masked');
    assert.equal(await stageOf('孙丽'), 'examined');
    // The same resident again is a duplicate exam, refused with the reason.
    await page.getByTestId('walkin-id').fill(sun);
    const [again] = await Promise.all([page.waitForNavigation(), page.getByTestId('walkin-submit').click()]);
    assert.equal(again.status(), 409);
    assert.match(await page.getByTestId('walkin-error').innerText(), /不能重复体检/);
  } finally {
    await browser.close();
  }
});

test('an exam list with a bad row is imported and reported', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'clinic.zhang');
    const zhou = app.ids[NAMES.indexOf('周敏')];
    const good = residentId('19900101', 55);
    const wrong = good.slice(0, 17) + (good[17] === '1' ? '2' : '1');
    const csv = `身份证号,体检日期,体检机构\n${zhou},${day(0)},XY-WSY\n${wrong},${day(0)},XY-WSY\n`;
    await page.getByTestId('exam-file').setInputFiles({ name: 'exams.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
    await page.getByTestId('exam-submit').click();
    const summary = page.getByTestId('exam-summary');
    await summary.waitFor();
    assert.equal(await summary.locator('[data-count=imported]').innerText(), '1');
    assert.equal(await summary.locator('[data-count=rejected]').innerText(), '1');
    const bad = page.getByTestId('exam-rejected-row');
    assert.equal(await bad.count(), 1);
    assert.match(await bad.innerText(), /^3\s/);
    assert.ok(!(await bad.innerText()).includes(wrong), 'masked for clinic staff');
    assert.equal(await stageOf('周敏'), 'examined');
    await shot(page, 'clinic-exam-import');
  } finally {
    await browser.close();
  }
});

test('the office’s other pages and other roles’ pages are not the clinic’s', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'clinic.zhang');
    for (const path of ['/app/imports', '/app/waves']) {
      const response = await page.goto(`${app.base}${path}`);
      assert.equal(response.status(), 403, path);
    }
    // Another institution's appointment cannot be marked through the page's address either.
    await page.goto(`${app.base}/app/`);
    const csrf = await page.locator('meta[name=csrf-token]').getAttribute('content');
    const wu = await appointmentOf('吴刚');
    const response = await page.request.post(`${app.base}/app/clinic/appointments/${wu.id}/attended`, {
      form: { _csrf: csrf },
    });
    assert.equal(response.status(), 404);
    assert.equal((await appointmentOf('吴刚')).status, 'booked');
  } finally {
    await browser.close();
  }
});

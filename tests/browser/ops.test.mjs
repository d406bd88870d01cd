// The county office's uploads and message waves in a desktop browser: a residents file with
// a bad row (its progress, its report, the rejected row's download, the residents through
// the API), key-group tags, a wave previewed with its SMS segments, created and followed,
// another scheduled one cancelled; a village cadre is kept out.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { startApp, desktop, shot, signIn, openCampaign, residentId, VILLAGE, OTHER_VILLAGE } from './harness.mjs';

let app;
let campaign;
let office;

const GULI = residentId('19850315', 21);
const LI = residentId('19900620', 22);
const WANG = residentId('19781102', 23);
// A check digit that does not fit: the row is rejected.
const BAD = (() => {
  const good = residentId('19720101', 24);
  return good.slice(0, 17) + (good[17] === '1' ? '2' : '1');
})();

/// A day from today, as YYYY-MM-DD in the service's (Beijing) calendar.
function day(offset) {
  const at = new Date(Date.now() + 8 * 3600000 + offset * 86400000);
  return at.toISOString().slice(0, 10);
}

/// `M月D日` of a YYYY-MM-DD day, as messages write it.
const monthDay = (d) => `${Number(d.slice(5, 7))}月${Number(d.slice(8, 10))}日`;

async function phoneWidth(page, name) {
  await page.setViewportSize({ width: 360, height: 800 });
  await shot(page, name);
  await page.setViewportSize({ width: 1280, height: 900 });
}

before(async () => {
  app = await startApp([['阿依古丽', VILLAGE, '13899003300']]);
  campaign = await openCampaign(app);
  office = await app.token('office.li');
});

after(async () => {
  await app?.stop();
});

test('the office uploads a residents file: progress, report, the rejected row and its download', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'office.li');
    await page.goto(`${app.base}/app/imports`);
    const csv =
      '姓名,身份证号,户籍地区划代码,联系电话,流动类型\n' +
      `古丽·艾山,${GULI},${VILLAGE},13899003301,疆外\n` +
      `李强,${LI},${VILLAGE},13899003302,外出上学\n` +
      `王小红,${WANG},${OTHER_VILLAGE},,本地\n` +
      `赵错号,${BAD},${VILLAGE},13899003304,\n`;
    await page.getByTestId('import-file').setInputFiles({
      name: 'residents.csv',
      mimeType: 'text/csv',
      buffer: Buffer.from(csv),
    });
    await page.getByTestId('import-submit').click();
    const summary = page.getByTestId('import-summary');
    await summary.waitFor();
    const bar = page.getByTestId('import-progress');
    const [value, max] = await bar.evaluate((b) => [b.value, b.max]);
    assert.equal(value, max, 'the bar is full once the report is in');
    assert.equal(await summary.locator('[data-count=imported]').innerText(), '3');
    assert.equal(await summary.locator('[data-count=rejected]').innerText(), '1');

    const rejected = page.getByTestId('import-rejected-row');
    assert.equal(await rejected.count(), 1);
    assert.equal(await rejected.getAttribute('data-line'), '5');
    const shown = await rejected.innerText();
    assert.match(shown, /赵错号/);
    assert.match(shown, /校验/, shown);
    assert.ok(!shown.includes(BAD), 'the ID number is masked');
    assert.ok(!shown.includes('13899003304'), 'the phone is masked');
    await shot(page, 'ops-imports');
    await phoneWidth(page, 'ops-imports-360');

    // The download: a CSV file with the row and its reason, as the page shows it.
    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByTestId('import-rejected-download').click(),
    ]);
    const file = readFileSync(await download.path(), 'utf8');
    assert.ok(file.startsWith('\uFEFFline,姓名,身份证号'), file);
    assert.match(file, /^5,赵错号,.*校验/m);
    assert.ok(!file.includes(BAD));
    const form = page.locator('form[action="/app/imports/rejected.csv"]');
    const answer = await page.request.post(`${app.base}/app/imports/rejected.csv`, {
      form: {
        _csrf: await form.locator('[name=_csrf]').inputValue(),
        rows: await form.locator('[name=rows]').inputValue(),
      },
    });
    assert.equal(answer.status(), 200);
    assert.match(answer.headers()['content-disposition'], /attachment/);
    assert.match(await answer.text(), /赵错号/);

    // The residents are in the register, as the API lists them.
    const listed = await app.api('GET', '/residents?limit=50', office);
    const names = listed.body.residents.map((r) => r.name).sort();
    assert.deepEqual(names, ['古丽·艾山', '李强', '王小红', '阿依古丽'].sort());

    // The same file again changes nothing.
    await page.getByTestId('import-submit').click();
    await page.waitForFunction(
      () => document.querySelector('[data-testid=import-summary] [data-count=unchanged]')?.textContent === '3',
    );
  } finally {
    await browser.close();
  }
});

test('key-group tags are uploaded and the report counts them', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'office.li');
    await page.goto(`${app.base}/app/imports`);
    const csv = `身份证号,标签\n${GULI},高血压、糖尿病\n${BAD},高血压\n`;
    await page.getByTestId('tags-file').setInputFiles({
      name: 'tags.csv',
      mimeType: 'text/csv',
      buffer: Buffer.from(csv),
    });
    await page.getByTestId('tags-submit').click();
    const summary = page.getByTestId('tags-summary');
    await summary.waitFor();
    assert.equal(await summary.locator('[data-count=added]').innerText(), '2');
    assert.equal(await summary.locator('[data-count=rejected]').innerText(), '1');
    assert.equal(await page.getByTestId('tags-rejected-row').count(), 1);
    const guli = (await app.api('GET', `/residents?id_number=${GULI}`, office)).body.residents[0].id;
    const tags = await app.api('GET', `/residents/${guli}/tags`, office);
    assert.equal(tags.status, 200, JSON.stringify(tags.body));
    assert.deepEqual(tags.body.tags.map((t) => t.code).sort(), ['diabetes', 'hypertension']);
  } finally {
    await browser.close();
  }
});

test('a wave is previewed with its SMS segments, created and followed; a scheduled one is cancelled', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'office.li');
    await page.goto(`${app.base}/app/waves`);
    await Promise.all([page.waitForURL(/\/app\/waves\/new/), page.getByTestId('wave-new').click()]);
    // The domain's default audience is ticked: every migrant type but local, the stages
    // before an appointment.
    const ticked = await page.evaluate(() =>
      [...document.querySelectorAll('#wave-form input[type=checkbox]:checked')].map((c) => c.value),
    );
    assert.deepEqual(ticked, [
      'in_region_permit', 'in_region_no_permit', 'out_of_region', 'student_away', 'official_away',
      'target', 'notified', 'reached',
    ]);
    const preview = page.getByTestId('wave-preview');
    assert.match(await preview.innerText(), /回乡/);
    assert.match(await preview.innerText(), /回TD退订$/);
    const segments = Number(await page.getByTestId('wave-segments').innerText());
    assert.ok(segments >= 2, `a long text takes ${segments} segments`);
    // The preview follows the window typed.
    await page.getByTestId('wave-window-to').fill(day(40));
    await page.waitForFunction(
      (text) => document.querySelector('[data-testid=wave-preview]').textContent.includes(text),
      monthDay(day(40)),
    );
    // A window that ends before it starts is refused, the form kept.
    await page.getByTestId('wave-name').fill('春节回乡体检通知');
    await page.getByTestId('wave-window-from').fill(day(10));
    await page.getByTestId('wave-window-to').fill(day(5));
    const [refused] = await Promise.all([page.waitForNavigation(), page.getByTestId('wave-submit').click()]);
    assert.equal(refused.status(), 422);
    assert.match(await page.getByTestId('wave-error').innerText(), /结束日期早于开始日期/);
    assert.equal(await page.getByTestId('wave-name').inputValue(), '春节回乡体检通知');
    assert.equal(await page.locator('#wave-form input[type=checkbox]:checked').count(), 8, 'the boxes kept');
    await page.getByTestId('wave-window-from').fill(day(0));
    await page.getByTestId('wave-window-to').fill(day(30));
    await page.waitForFunction(
      (text) => document.querySelector('[data-testid=wave-preview]').textContent.includes(text),
      monthDay(day(30)),
    );
    await shot(page, 'ops-wave-new');
    await phoneWidth(page, 'ops-wave-new-360');
    await Promise.all([page.waitForURL(/\/app\/waves\/\d+$/), page.getByTestId('wave-submit').click()]);
    const id = Number(page.url().split('/').pop());
    const made = await app.api('GET', `/waves/${id}`, office);
    assert.equal(made.status, 200);
    assert.equal(made.body.name, '春节回乡体检通知');
    assert.equal(made.body.planned, 2, 'the two migrants imported');
    assert.equal(await page.getByTestId('wave-planned').innerText(), '2');
    await page.waitForFunction(() => Number(document.getElementById('wave-progress').dataset.polls) >= 1);
    const states = await app.api('GET', `/waves/${id}`, office);
    const shownTotal = await page.evaluate(() =>
      [...document.querySelectorAll('#wave-progress [data-state] dd')].reduce((n, dd) => n + Number(dd.textContent), 0),
    );
    assert.equal(shownTotal, Object.values(states.body.states).reduce((a, b) => a + b, 0));
    await shot(page, 'ops-wave');
    await phoneWidth(page, 'ops-wave-360');

    await page.goto(`${app.base}/app/waves`);
    const row = page.locator(`[data-testid=wave-row][data-wave-id="${id}"]`);
    assert.match(await row.innerText(), /春节回乡体检通知/);

    // Another wave, sent tomorrow morning, is cancelled on its page.
    await page.goto(`${app.base}/app/waves/new`);
    await page.getByTestId('wave-name').fill('暑期回乡通知');
    await page.getByTestId('wave-window-from').fill(day(2));
    await page.getByTestId('wave-window-to').fill(day(20));
    await page.getByTestId('wave-send-at').fill(`${day(1)}T10:00`);
    await Promise.all([page.waitForURL(/\/app\/waves\/\d+$/), page.getByTestId('wave-submit').click()]);
    const later = Number(page.url().split('/').pop());
    assert.equal(await page.getByTestId('wave-state').innerText(), '未开始');
    const scheduled = await app.api('GET', `/waves/${later}`, office);
    assert.equal(scheduled.body.states.scheduled, 2, JSON.stringify(scheduled.body));
    page.once('dialog', (dialog) => dialog.accept());
    await Promise.all([page.waitForEvent('load'), page.getByTestId('wave-cancel').click()]);
    assert.equal(await page.getByTestId('wave-state').innerText(), '已取消');
    const cancelled = await app.api('GET', `/waves/${later}`, office);
    assert.equal(cancelled.body.status, 'cancelled');
    assert.equal(cancelled.body.states.cancelled, 2);
    assert.equal(await page.getByTestId('wave-count-cancelled').innerText(), '2');

    await page.goto(`${app.base}/app/waves`);
    assert.equal(await page.getByTestId('wave-row').count(), 2);
    assert.equal(await page.locator(`[data-testid=wave-row][data-wave-id="${later}"]`).getAttribute('data-status'), 'cancelled');
    await shot(page, 'ops-waves');
    await phoneWidth(page, 'ops-waves-360');
  } finally {
    await browser.close();
  }
});

test('a village cadre gets the refusal page for imports and waves', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'cadre.ma');
    for (const path of ['/app/imports', '/app/waves', '/app/waves/new']) {
      const response = await page.goto(`${app.base}${path}`);
      assert.equal(response.status(), 403, path);
      assert.match(await page.locator('h1').innerText(), /无权访问/);
    }
    // Nor may the cadre's session upload through the page's address.
    await page.goto(`${app.base}/m/`);
    const csrf = await page.locator('meta[name=csrf-token]').getAttribute('content');
    const upload = await page.request.post(`${app.base}/app/imports/residents`, {
      headers: { 'x-csrf-token': csrf, 'content-type': 'application/octet-stream' },
      data: Buffer.from(`姓名,身份证号,户籍地区划代码\n某某,${residentId('19800101', 31)},${VILLAGE}\n`),
    });
    assert.equal(upload.status(), 403);
    const listed = await app.api('GET', `/residents?id_number=${residentId('19800101', 31)}`, office);
    assert.equal(listed.body.residents.length, 0);
  } finally {
    await browser.close();
  }
});

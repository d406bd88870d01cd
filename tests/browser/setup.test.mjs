// The county office's set-up pages: a campaign created through its form (a refused value
// shown with the input kept) and opened; an institution with its calendar changed by hand
// and by an uploaded CSV (a bad file changes nothing); a user added, signed in, given a new
// password and deactivated; and these pages refused to cadres and township officers.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startApp, desktop, phone, shot, signIn, residentNamed, PASSWORD,
  VILLAGE, OTHER_VILLAGE, TOWNSHIP,
} from './harness.mjs';

let app;

before(async () => {
  app = await startApp([
    ['王芳', VILLAGE, '13899003301'],
    ['刘洋', VILLAGE, ''],
    ['马军', OTHER_VILLAGE, ''],
  ]);
});

after(async () => {
  await app?.stop();
});

/// A day from today, as YYYY-MM-DD in the service's (Beijing) calendar.
function day(offset) {
  const at = new Date(Date.now() + 8 * 3600000 + offset * 86400000);
  return at.toISOString().slice(0, 10);
}

/// The API's answer to signing in with `password`: its status.
async function login(username, password) {
  const response = await fetch(`${app.base}/api/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  return response.status;
}

/// Clicks `button` and waits for the POST it sends to `path` to be answered.
async function submit(page, button, path) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === path),
    page.waitForNavigation(),
    button.click(),
  ]);
  return response;
}

test('the office creates a campaign through the form, corrects a refused date and opens it', async () => {
  const year = new Date().getFullYear() + 1;
  const office = await app.token('office.li');
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'office.li');
    await page.goto(`${app.base}/app/campaigns`);
    assert.match(await page.locator('main').innerText(), /还没有体检工作/);
    await Promise.all([page.waitForURL(/\/app\/campaigns\/new$/), page.getByTestId('campaign-new').click()]);

    // The year's plan calendar is filled in, and follows the year typed.
    const yearField = page.getByTestId('campaign-year');
    await yearField.fill(String(year));
    await yearField.dispatchEvent('change');
    assert.equal(await page.getByTestId('phase-survey-from').inputValue(), `${year}-01-01`);
    assert.equal(await page.getByTestId('phase-exams-to').inputValue(), `${year}-09-30`);
    assert.equal(await page.getByTestId('phase-catch_up-to').inputValue(), `${year}-10-31`);

    await page.getByTestId('campaign-name').fill(`${year}年新源县全民健康体检`);
    await page.getByTestId('campaign-timezone').selectOption('Asia/Urumqi');
    await page.getByTestId('cohort-0-6').uncheck();
    await page.getByTestId('target-row').first().locator('input').fill('96');
    await page.getByTestId('refusal-min-attempts').fill('4');
    await page.getByTestId('quiet-start').fill('22:00');
    // Exams ending before they start.
    await page.getByTestId('phase-exams-to').fill(`${year - 1}-12-31`);
    let response = await submit(page, page.getByTestId('campaign-save'), '/app/campaigns/new');
    assert.equal(response.status(), 422);
    assert.match(await page.getByTestId('campaign-error').innerText(), /体检实施的结束日期早于开始日期/);
    await shot(page, 'setup-campaign-refused');
    // What was entered is still there.
    assert.equal(await page.getByTestId('campaign-name').inputValue(), `${year}年新源县全民健康体检`);
    assert.equal(await page.getByTestId('phase-exams-to').inputValue(), `${year - 1}-12-31`);
    assert.equal(await page.getByTestId('campaign-timezone').inputValue(), 'Asia/Urumqi');
    assert.equal(await page.getByTestId('cohort-0-6').isChecked(), false);
    assert.equal(await page.getByTestId('cohort-65-79').isChecked(), true);
    assert.equal(await page.getByTestId('refusal-min-attempts').inputValue(), '4');
    assert.equal(await page.getByTestId('quiet-start').inputValue(), '22:00');
    let listed = await app.api('GET', '/campaigns', office);
    assert.equal(listed.body.campaigns.length, 0, 'nothing was created');

    await page.getByTestId('phase-exams-to').fill(`${year}-09-30`);
    response = await submit(page, page.getByTestId('campaign-save'), '/app/campaigns/new');
    assert.equal(response.status(), 303);
    await page.waitForURL(/\/app\/campaigns\/\d+\?saved=1$/);
    assert.match(await page.getByTestId('campaign-notice').innerText(), /已保存/);
    assert.equal(await page.getByTestId('campaign-status').innerText(), '未开启');

    listed = await app.api('GET', '/campaigns', office);
    assert.equal(listed.body.campaigns.length, 1);
    const made = listed.body.campaigns[0];
    assert.equal(made.year, year);
    assert.equal(made.name, `${year}年新源县全民健康体检`);
    assert.equal(made.status, 'draft');
    assert.equal(made.timezone, 'Asia/Urumqi');
    assert.deepEqual(made.quiet_hours, { start: '22:00', end: '08:00' });
    assert.deepEqual(made.cohorts, ['7-14', '15-64', '65-79', '80+']);
    assert.deepEqual(made.targets, [
      { group: '65+', percent: 96 },
      { group: 'hypertension', percent: 95 },
      { group: 'diabetes', percent: 95 },
    ]);
    assert.deepEqual(made.refusal_rule, { min_attempts: 4, min_days: 2 });
    const exams = made.phases.find((p) => p.phase === 'exams');
    assert.deepEqual([exams.from, exams.to], [`${year}-01-01`, `${year}-09-30`]);

    // A change of the draft: the catch-up lengthened.
    await page.getByTestId('phase-catch_up-to').fill(`${year}-10-25`);
    response = await submit(page, page.getByTestId('campaign-save'), `/app/campaigns/${made.id}`);
    assert.equal(response.status(), 303);
    const changed = await app.api('GET', `/campaigns/${made.id}`, office);
    assert.equal(changed.body.phases.find((p) => p.phase === 'catch_up').to, `${year}-10-25`);

    // Opening, once confirmed, enrols the residents of the cohorts.
    await page.getByTestId('campaign-open-confirm').check();
    await shot(page, 'setup-campaign-draft');
    response = await submit(page, page.getByTestId('campaign-open'), `/app/campaigns/${made.id}/open`);
    assert.equal(response.status(), 303);
    assert.match(await page.getByTestId('campaign-notice').innerText(), /登记居民 3 人/);
    assert.equal(await page.getByTestId('campaign-status').innerText(), '进行中');
    await page.getByTestId('campaign-close').waitFor();
    await shot(page, 'setup-campaign-open');
    const opened = await app.api('GET', `/campaigns/${made.id}`, office);
    assert.equal(opened.body.status, 'open');
    for (const name of ['王芳', '刘洋', '马军']) {
      const progress = await app.api('GET', `/campaigns/${made.id}/residents/${await residentNamed(app, name)}`, office);
      assert.equal(progress.status, 200, `${name} is enrolled`);
    }
    // Open, the cohorts and reference date are shown, not offered.
    assert.equal(await page.getByTestId('cohort-65-79').count(), 0);
    await page.goto(`${app.base}/app/campaigns`);
    const row = page.getByTestId('campaign-row');
    assert.equal(await row.count(), 1);
    assert.match(await row.innerText(), new RegExp(`${year}[\\s\\S]*进行中`));
  } finally {
    await browser.close();
  }
});

test('an institution is registered, its calendar changed in place and by an uploaded CSV', async () => {
  const office = await app.token('office.li');
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'office.li');
    await page.goto(`${app.base}/app/institutions`);
    await Promise.all([page.waitForURL(/\/app\/institutions\/new$/), page.getByTestId('institution-new').click()]);
    await page.getByTestId('institution-code').fill('xy-wsy');
    await page.getByTestId('institution-name').fill('新源镇卫生院');
    await page.getByTestId('institution-kind').selectOption('township_centre');
    await page.getByTestId('institution-area').selectOption(TOWNSHIP);
    await page.getByTestId('institution-capacity').fill('20');
    await page.getByTestId('institution-address').fill('新源镇团结路18号');
    // Nothing served yet: refused, input kept.
    let response = await submit(page, page.getByTestId('institution-save'), '/app/institutions/new');
    assert.equal(response.status(), 422);
    assert.match(await page.getByTestId('institution-error').innerText(), /请至少指定一个服务区域/);
    assert.equal(await page.getByTestId('institution-name').inputValue(), '新源镇卫生院');
    await page.getByTestId(`serves-${TOWNSHIP}`).check();
    response = await submit(page, page.getByTestId('institution-save'), '/app/institutions/new');
    assert.equal(response.status(), 303);
    await page.waitForURL(/\/app\/institutions\/\d+\?saved=1$/);
    const id = Number(new URL(page.url()).pathname.split('/').pop());
    const made = await app.api('GET', `/institutions/${id}`, office);
    assert.equal(made.body.code, 'XY-WSY');
    assert.equal(made.body.daily_capacity, 20);
    assert.deepEqual(made.body.serves, [TOWNSHIP]);
    assert.equal(made.body.address, '新源镇团结路18号');
    const calendarOf = async (d) => {
      const cal = await app.api('GET', `/institutions/${id}/calendar?from=${d}&to=${d}`, office);
      assert.equal(cal.status, 200, JSON.stringify(cal.body));
      return cal.body.days[0];
    };

    // One day's capacity changed in place.
    const dayRow = (d) => page.locator(`[data-testid=calendar-day][data-day="${d}"]`);
    assert.equal(await dayRow(day(2)).getByTestId('calendar-capacity').inputValue(), '20');
    await dayRow(day(2)).getByTestId('calendar-capacity').fill('35');
    response = await submit(page, dayRow(day(2)).getByTestId('calendar-save'), `/app/institutions/${id}/days/${day(2)}`);
    assert.equal(response.status(), 303);
    assert.equal((await calendarOf(day(2))).capacity, 35);
    assert.equal(await dayRow(day(2)).getAttribute('data-capacity'), '35');
    assert.match(await page.getByTestId('institution-notice').innerText(), new RegExp(`${day(2)} 已保存`));
    // Another closed.
    await dayRow(day(3)).getByTestId('calendar-closed').check();
    await submit(page, dayRow(day(3)).getByTestId('calendar-save'), `/app/institutions/${id}/days/${day(3)}`);
    assert.equal((await calendarOf(day(3))).closed, true);
    assert.match(await dayRow(day(3)).innerText(), /休/);
    // A capacity the domain refuses is shown at its day; nothing changes.
    await dayRow(day(4)).getByTestId('calendar-capacity').fill('-5');
    response = await submit(page, dayRow(day(4)).getByTestId('calendar-save'), `/app/institutions/${id}/days/${day(4)}`);
    assert.equal(response.status(), 422);
    assert.match(await page.getByTestId('calendar-error').innerText(), /每日容量应在 0–10000 之间/);
    assert.match(await dayRow(day(4)).innerText(), /每日容量应在/);
    assert.equal(await dayRow(day(4)).getByTestId('calendar-capacity').inputValue(), '-5');
    assert.equal((await calendarOf(day(4))).capacity, 20);

    // A calendar CSV uploaded (UTF-8 with a BOM, as some editors write it).
    const upload = async (name, text) => {
      await page.getByTestId('calendar-import').setInputFiles({ name, mimeType: 'text/csv', buffer: Buffer.from(text) });
      return submit(page, page.getByTestId('calendar-import-submit'), `/app/institutions/${id}/import`);
    };
    response = await upload('calendar.csv', `\ufeff机构代码,日期,容量,休息,备注\nXY-WSY,${day(5)},12,否,\nXY-WSY,${day(6)},,是,义诊\n`);
    assert.equal(response.status(), 200);
    assert.match(await page.getByTestId('calendar-import-result').innerText(), /已更新 2 天/);
    assert.equal((await calendarOf(day(5))).capacity, 12);
    const sixth = await calendarOf(day(6));
    assert.deepEqual([sixth.closed, sixth.note], [true, '义诊']);
    assert.equal(await dayRow(day(5)).getAttribute('data-capacity'), '12');

    // A file without its date column is refused whole: the message, nothing written.
    response = await upload('bad.csv', `机构代码,容量\nXY-WSY,99\n`);
    assert.equal(response.status(), 422);
    assert.match(await page.getByTestId('calendar-import-error').innerText(), /表头缺少必需的列/);
    await shot(page, 'setup-calendar-bad-csv');
    // A row naming no institution is refused with its reason; the others' days stay.
    response = await upload('unknown.csv', `机构代码,日期,容量\nNOPE,${day(5)},1\n`);
    assert.equal(response.status(), 200);
    assert.match(await page.getByTestId('calendar-import-rejected').innerText(), /第 2 行.*机构 NOPE 不存在/);
    assert.equal((await calendarOf(day(5))).capacity, 12);
    assert.equal((await calendarOf(day(2))).capacity, 35);

    await page.goto(`${app.base}/app/institutions`);
    const row = page.locator('[data-testid=institution-row][data-code="XY-WSY"]');
    assert.match(await row.innerText(), /新源镇卫生院[\s\S]*乡镇卫生院[\s\S]*20[\s\S]*新源镇/);
  } finally {
    await browser.close();
  }
});

test('a user is added, signs in with the password shown, has it reset and is deactivated', async () => {
  const office = await app.token('office.li');
  const { browser, page } = await desktop();
  const second = await desktop();
  try {
    await signIn(app, page, 'office.li');
    await page.goto(`${app.base}/app/users`);
    await page.getByTestId('user-username').fill('cadre.new');
    await page.getByTestId('user-display-name').fill('阿依古丽');
    await page.getByTestId('user-role').selectOption('cadre');
    // A township is the wrong level for a cadre.
    await page.getByTestId('user-area').selectOption(TOWNSHIP);
    let response = await submit(page, page.getByTestId('user-save'), '/app/users');
    assert.equal(response.status(), 422);
    assert.match(await page.getByTestId('user-error').innerText(), /该角色的管辖区划必须是村（社区）级区划/);
    assert.equal(await page.getByTestId('user-username').inputValue(), 'cadre.new');
    assert.equal(await page.getByTestId('user-display-name').inputValue(), '阿依古丽');
    assert.equal(await page.getByTestId('user-role').inputValue(), 'cadre');
    const missing = await app.api('GET', '/users?q=cadre.new', office);
    assert.equal(missing.body.users.length, 0);

    await page.getByTestId('user-area').selectOption(VILLAGE);
    response = await submit(page, page.getByTestId('user-save'), '/app/users');
    assert.equal(response.status(), 200);
    const first = (await page.getByTestId('user-password').innerText()).trim();
    assert.ok(first.length >= 10, first);
    await shot(page, 'setup-user-added');
    const found = await app.api('GET', '/users?q=cadre.new', office);
    assert.equal(found.body.users.length, 1);
    const user = found.body.users[0];
    assert.deepEqual([user.role, user.area_code, user.display_name, user.active], ['cadre', VILLAGE, '阿依古丽', true]);
    assert.equal(await page.locator('.bar .who').innerText(), 'office.li · 县卫健委');
    const row = page.locator('[data-testid=user-row][data-username="cadre.new"]');
    assert.match(await row.innerText(), /村干部[\s\S]*阿勒玛勒村[\s\S]*启用/);

    // The new cadre signs in with the password shown.
    await signIn(app, second.page, 'cadre.new', first);
    assert.match(second.page.url(), /\/m\/$/);

    // The office moves them to the other village.
    await Promise.all([page.waitForURL(new RegExp(`/app/users/${user.id}$`)), row.getByRole('link', { name: 'cadre.new' }).click()]);
    // The page's own names do not shadow the signed-in user's in the header.
    assert.equal(await page.locator('.bar .who').innerText(), 'office.li · 县卫健委');
    await page.getByTestId('user-area').selectOption(OTHER_VILLAGE);
    response = await submit(page, page.getByTestId('user-save'), `/app/users/${user.id}`);
    assert.equal(response.status(), 303);
    assert.equal((await app.api('GET', `/users/${user.id}`, office)).body.area_code, OTHER_VILLAGE);
    // A township area for a cadre is refused here too.
    await page.getByTestId('user-area').selectOption(TOWNSHIP);
    response = await submit(page, page.getByTestId('user-save'), `/app/users/${user.id}`);
    assert.equal(response.status(), 422);
    assert.match(await page.getByTestId('user-error').innerText(), /村（社区）级/);
    assert.equal(await page.getByTestId('user-area').inputValue(), TOWNSHIP);
    assert.equal((await app.api('GET', `/users/${user.id}`, office)).body.area_code, OTHER_VILLAGE);

    // A reset: the old password fails, the new one works.
    response = await submit(page, page.getByTestId('user-reset'), `/app/users/${user.id}/reset`);
    assert.equal(response.status(), 200);
    const reset = (await page.getByTestId('user-password').innerText()).trim();
    assert.notEqual(reset, first);
    await shot(page, 'setup-user-reset');
    assert.equal(await login('cadre.new', first), 401);
    assert.equal(await login('cadre.new', reset), 200);

    // Deactivated: signing in fails, on the page too.
    response = await submit(page, page.getByTestId('user-deactivate'), `/app/users/${user.id}/active`);
    assert.equal(response.status(), 303);
    assert.match(await page.getByTestId('user-notice').innerText(), /已停用/);
    assert.equal(await page.getByTestId('user-status').innerText(), '已停用');
    assert.equal((await app.api('GET', `/users/${user.id}`, office)).body.active, false);
    assert.equal(await login('cadre.new', reset), 401);
    await signIn(app, second.page, 'cadre.new', reset);
    await second.page.getByTestId('login-error').waitFor();
    await page.goto(`${app.base}/app/users`);
    assert.match(await page.locator('[data-testid=user-row][data-username="cadre.new"]').innerText(), /已停用/);
  } finally {
    await browser.close();
    await second.browser.close();
  }
});

test('cadres and township officers are refused the set-up pages', async () => {
  for (const username of ['cadre.ma', 'township.wang']) {
    const { browser, page } = await desktop();
    try {
      await signIn(app, page, username, PASSWORD);
      for (const path of ['/app/campaigns', '/app/campaigns/new', '/app/users', '/app/institutions']) {
        const response = await page.goto(`${app.base}${path}`);
        assert.equal(response.status(), 403, `${username} ${path}`);
        assert.equal(await page.locator('h1').innerText(), '无权访问');
      }
    } finally {
      await browser.close();
    }
  }
});

test('the set-up pages fit a phone', async () => {
  const { browser, page } = await phone();
  try {
    await signIn(app, page, 'office.li');
    for (const [path, name] of [['/app/campaigns/new', 'setup-campaign-phone'], ['/app/users', 'setup-users-phone']]) {
      await page.goto(`${app.base}${path}`);
      const wide = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(wide <= 360, `${path} is ${wide}px wide`);
      const cut = await page.evaluate(() =>
        [...document.querySelectorAll('main input, main select, main button')]
          .filter((e) => e.offsetParent && e.getBoundingClientRect().right > window.innerWidth + 0.5)
          .map((e) => e.name || e.textContent));
      assert.deepEqual(cut, [], `${path}: fields cut off at the right`);
      await shot(page, name);
    }
  } finally {
    await browser.close();
  }
});

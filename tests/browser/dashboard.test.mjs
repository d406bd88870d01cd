// The office's dashboard at /app/ in a real browser: the funnel and the ranking against the
// report API's JSON (with and without filters), the drill-down from the county to a
// village's not-appointed residents with an audited reveal, a township officer kept to their
// township, the auditor without the field lists, the downloads, and the phone width.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startApp, desktop, phone, shot, signIn, openCampaign, residentNamed,
  COUNTY, TOWNSHIP, VILLAGE, OTHER_VILLAGE, OTHER_TOWNSHIP, OTHER_TOWNSHIP_VILLAGE,
} from './harness.mjs';

let app;
let campaign;

const STAGES = ['target', 'notified', 'reached', 'appointed', 'examined', 'refused', 'exempt'];

/// A day from today, as YYYY-MM-DD in the service's (Beijing) calendar.
function day(offset) {
  const at = new Date(Date.now() + 8 * 3600000 + offset * 86400000);
  return at.toISOString().slice(0, 10);
}

before(async () => {
  app = await startApp([
    ['张伟', VILLAGE, '13899003301'],
    ['李娜', VILLAGE, '13899003302'],
    ['王芳', VILLAGE, '13899003303'],
    ['赵磊', VILLAGE, ''],
    ['刘洋', OTHER_VILLAGE, '13899003305'],
    ['陈静', OTHER_VILLAGE, ''],
    ['马军', OTHER_TOWNSHIP_VILLAGE, '13899003307'],
    ['孙丽', OTHER_TOWNSHIP_VILLAGE, ''],
  ]);
  campaign = await openCampaign(app);
  const office = await app.token('office.li');
  const made = await app.api('POST', '/institutions', office, {
    code: 'XY-WSY',
    name: '新源镇卫生院',
    kind: 'township_centre',
    area_code: TOWNSHIP,
    daily_capacity: 20,
    serves: [TOWNSHIP],
    address: '新源镇团结路18号',
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const clinic = made.body.id;

  const attempt = async (name, outcome) => {
    const id = await residentNamed(app, name);
    const made = await app.api('POST', `/campaigns/${campaign}/residents/${id}/attempts`, office, {
      channel: 'phone_call',
      contact: 'own_phone',
      outcome,
    });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    return id;
  };
  // VILLAGE: 张伟 examined, 李娜 appointed, 王芳 notified only, 赵磊 untouched.
  const zhang = await attempt('张伟', 'reached_agreed');
  const li = await attempt('李娜', 'reached_agreed');
  await attempt('王芳', 'no_answer');
  // OTHER_VILLAGE: 刘洋 reached. OTHER_TOWNSHIP_VILLAGE: 马军 reached and examined.
  await attempt('刘洋', 'reached_agreed');
  const ma = await attempt('马军', 'reached_agreed');

  const booked = await app.api('POST', `/campaigns/${campaign}/bookings`, office, {
    institution_id: clinic,
    day: day(1),
    resident_ids: [li],
  });
  assert.equal(booked.status, 201, JSON.stringify(booked.body));
  for (const resident of [zhang, ma]) {
    const exam = await app.api('POST', `/campaigns/${campaign}/exams`, office, {
      resident_id: resident,
      examined_on: day(0),
      institution_id: clinic,
    });
    assert.equal(exam.status, 201, JSON.stringify(exam.body));
  }
  const refreshed = await app.api('POST', `/campaigns/${campaign}/reports/refresh`, office);
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
});

after(async () => {
  await app?.stop();
});

/// The funnel's counts on the page, by stage.
async function funnelCounts(page) {
  const funnel = page.getByTestId('dashboard-funnel');
  const counts = {};
  for (const stage of STAGES) {
    counts[stage] = Number(await funnel.locator(`[data-stage="${stage}"]`).getAttribute('data-count'));
  }
  return counts;
}

function apiCounts(total) {
  return Object.fromEntries(STAGES.map((s) => [s, total[s]]));
}

/// The ranking rows on the page as the API writes them (code, exam rate, reach rate).
async function rankingRows(page) {
  return page.getByTestId('ranking-row').evaluateAll((rows) =>
    rows.map((r) => ({
      code: r.dataset.area,
      exam: r.dataset.examRate === '' ? null : Number(r.dataset.examRate),
      reach: r.dataset.reachRate === '' ? null : Number(r.dataset.reachRate),
    })),
  );
}

const apiRanking = (body) => body.areas.map((a) => ({ code: a.code, exam: a.exam.rate, reach: a.reach.rate }));

test('the office sees the funnel and the ranking the report API gives, with and without filters', async () => {
  const { browser, page } = await desktop();
  try {
    const office = await app.token('office.li');
    await signIn(app, page, 'office.li');
    assert.equal(new URL(page.url()).pathname, '/app/');

    const progress = await app.api('GET', `/campaigns/${campaign}/reports/progress`, office);
    assert.equal(progress.status, 200);
    const counts = await funnelCounts(page);
    assert.deepEqual(counts, apiCounts(progress.body.total));
    // What the set-up did, county-wide: 8 residents, 5 called, 4 reached, 1 booked and 2
    // examined (the funnel counts the examined as appointed too).
    assert.deepEqual(counts, { target: 8, notified: 5, reached: 4, appointed: 3, examined: 2, refused: 0, exempt: 0 });

    const rankings = await app.api('GET', `/campaigns/${campaign}/reports/rankings`, office);
    assert.equal(rankings.status, 200);
    const rows = await rankingRows(page);
    assert.deepEqual(rows, apiRanking(rankings.body));
    assert.deepEqual(rows.map((r) => r.code).sort(), [TOWNSHIP, OTHER_TOWNSHIP].sort());
    // 则克台镇 examined one of two, 新源镇 one of six.
    assert.equal(rows.find((r) => r.code === OTHER_TOWNSHIP).exam, 0.5);
    assert.match(await page.getByTestId('ranking').innerText(), /体检率后三名/);
    // The key groups, the migrant book, the series and the message figures are on the page.
    assert.ok((await page.getByTestId('target-row').count()) > 0);
    assert.ok(await page.getByTestId('migrants-table').isVisible());
    assert.equal(await page.getByTestId('series-chart').getAttribute('data-drawn'), 'true');
    assert.ok((await page.getByTestId('series-row').count()) >= 1);
    assert.match(await page.getByTestId('attempts-table').innerText(), /电话\s+5\s+4/);
    await shot(page, 'dashboard-county');

    // Filtered on the form: the township and an age group.
    await page.getByTestId('filter-area').selectOption(TOWNSHIP);
    await page.getByTestId('filter-cohort').selectOption('65-79');
    await Promise.all([page.waitForURL(/area=/), page.getByTestId('filter-submit').click()]);
    const url = new URL(page.url());
    assert.equal(url.searchParams.get('area'), TOWNSHIP);
    assert.equal(url.searchParams.get('cohort'), '65-79');
    const filtered = await app.api('GET', `/campaigns/${campaign}/reports/progress?area=${TOWNSHIP}&cohort=65-79`, office);
    assert.equal(filtered.status, 200);
    assert.deepEqual(await funnelCounts(page), apiCounts(filtered.body.total));
    assert.equal(filtered.body.total.target, 6);
    const villages = await app.api('GET', `/campaigns/${campaign}/reports/rankings?township=${TOWNSHIP}`, office);
    assert.deepEqual(await rankingRows(page), apiRanking(villages.body));
    assert.deepEqual((await rankingRows(page)).map((r) => r.code).sort(), [VILLAGE, OTHER_VILLAGE].sort());
    assert.equal(await page.getByTestId('dashboard-area').innerText(), '新源镇');

    // A filter the report refuses is answered next to the form, with the input kept.
    const bad = await page.goto(`${app.base}/app/?campaign=${campaign}&area=${TOWNSHIP}&cohort=99-120`);
    assert.equal(bad.status(), 422);
    assert.match(await page.getByTestId('form-error').innerText(), /cohort/);
    assert.equal(await page.getByTestId('filter-area').inputValue(), TOWNSHIP);
    assert.equal(await page.getByTestId('dashboard-funnel').count(), 0);
    const badDay = await page.goto(`${app.base}/app/?campaign=${campaign}&from=2026-13-40`);
    assert.equal(badDay.status(), 422);
    assert.match(await page.getByTestId('form-error').innerText(), /开始日期/);
    await shot(page, 'dashboard-invalid-filter');
  } finally {
    await browser.close();
  }
});

test('a drill-down by clicks goes from the county to a village and its residents not yet appointed', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'office.li');
    await Promise.all([
      page.waitForURL(new RegExp(`area=${TOWNSHIP}`)),
      page.locator(`[data-testid=ranking-row][data-area="${TOWNSHIP}"] [data-testid=ranking-link]`).click(),
    ]);
    assert.equal(await page.getByTestId('dashboard-area').innerText(), '新源镇');
    await Promise.all([
      page.waitForURL(new RegExp(`area=${VILLAGE}`)),
      page.locator(`[data-testid=ranking-row][data-area="${VILLAGE}"] [data-testid=ranking-link]`).click(),
    ]);
    assert.equal(await page.getByTestId('dashboard-area').innerText(), '阿勒玛勒村');
    assert.match(await page.getByTestId('breadcrumb').innerText(), /新源县\s*›\s*新源镇\s*›\s*阿勒玛勒村/);
    // The village's funnel: four residents, one booked and one examined.
    const counts = await funnelCounts(page);
    assert.equal(counts.target, 4);
    assert.equal(counts.examined, 1);
    assert.equal(counts.appointed, 2);
    await shot(page, 'dashboard-village');

    await Promise.all([page.waitForURL(/\/app\/stage\?/), page.getByTestId('stage-link-not_appointed').click()]);
    const list = page.getByTestId('stage-list');
    assert.equal(await list.getAttribute('data-list'), 'not_appointed');
    const names = await list.getByTestId('stage-row').locator('.name').allTextContents();
    assert.deepEqual(names.map((n) => n.trim()).sort(), ['王芳', '赵磊'].sort());
    assert.equal(await page.getByTestId('stage-total').innerText(), '2');
    // Numbers masked until asked for.
    const wang = await residentNamed(app, '王芳');
    const html = await page.content();
    for (const id of app.ids) assert.ok(!html.includes(id), 'a full ID number is on the page');
    assert.ok(!html.includes('13899003303'), 'a full phone number is on the page');
    const row = page.locator(`[data-testid=stage-row][data-resident-id="${wang}"]`);
    assert.match(await row.getByTestId('stage-phone').innerText(), /^138\*+3303$/);
    await shot(page, 'dashboard-stage-list');

    await row.getByTestId('stage-reveal').click();
    await page.waitForFunction((id) => {
      const cell = document.querySelector(`[data-resident-id="${id}"] [data-testid=stage-phone]`);
      return cell && !cell.textContent.includes('*');
    }, wang);
    assert.equal(await row.getByTestId('stage-phone').innerText(), '13899003303');
    assert.equal(await row.getByTestId('stage-id-number').innerText(), app.ids[2]);
    // The reveal is in the audit log.
    const office = await app.token('office.li');
    const audit = await app.api('GET', `/audit?action=resident.view_pii&entity_id=${wang}`, office);
    assert.equal(audit.status, 200, JSON.stringify(audit.body));
    assert.equal(audit.body.entries.length, 1, 'the reveal is audited once');
    assert.equal(audit.body.entries[0].actor_name, 'office.li');
  } finally {
    await browser.close();
  }
});

test('a township officer sees only the villages of the township and cannot open another', async () => {
  const { browser, page } = await desktop();
  try {
    const wang = await app.token('township.wang');
    await signIn(app, page, 'township.wang');
    assert.equal(new URL(page.url()).pathname, '/app/');
    const rows = await rankingRows(page);
    assert.deepEqual(rows.map((r) => r.code).sort(), [VILLAGE, OTHER_VILLAGE].sort());
    const rankings = await app.api('GET', `/campaigns/${campaign}/reports/rankings`, wang);
    assert.deepEqual(rows, apiRanking(rankings.body));
    const progress = await app.api('GET', `/campaigns/${campaign}/reports/progress`, wang);
    assert.deepEqual(await funnelCounts(page), apiCounts(progress.body.total));
    assert.equal(progress.body.total.target, 6);
    const options = await page.getByTestId('filter-area').locator('option').evaluateAll((o) => o.map((x) => x.value));
    assert.deepEqual(options.sort(), [TOWNSHIP, VILLAGE, OTHER_VILLAGE].sort());
    await shot(page, 'dashboard-township');

    for (const path of [
      `/app/?campaign=${campaign}&area=${OTHER_TOWNSHIP}`,
      `/app/?campaign=${campaign}&area=${OTHER_TOWNSHIP_VILLAGE}`,
      `/app/?campaign=${campaign}&area=${COUNTY}`,
      `/app/stage?campaign=${campaign}&area=${OTHER_TOWNSHIP}&stage=not_appointed`,
      `/app/stage?campaign=${campaign}&area=${OTHER_TOWNSHIP_VILLAGE}&stage=not_appointed`,
    ]) {
      const response = await page.goto(`${app.base}${path}`);
      assert.ok([403, 404].includes(response.status()), `${path}: ${response.status()}`);
      assert.equal(await page.getByTestId('dashboard-funnel').count(), 0, path);
      assert.equal(await page.getByTestId('stage-row').count(), 0, path);
      assert.ok((await page.getByTestId('error-message').innerText()).length > 0);
      const text = await page.content();
      assert.ok(!text.includes('马军') && !text.includes('则克台镇'), `${path} shows the other township`);
    }
    await shot(page, 'dashboard-out-of-scope');

    // The own township's village list opens.
    const own = await page.goto(`${app.base}/app/stage?campaign=${campaign}&area=${OTHER_VILLAGE}&stage=not_appointed`);
    assert.equal(own.status(), 200);
    const names = await page.getByTestId('stage-row').locator('.name').allTextContents();
    assert.deepEqual(names.map((n) => n.trim()).sort(), ['刘洋', '陈静'].sort());
  } finally {
    await browser.close();
  }
});

test('the auditor reads the dashboard but not the field lists', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'auditor.zhao');
    assert.equal(new URL(page.url()).pathname, '/app/');
    const auditor = await app.token('auditor.zhao');
    const progress = await app.api('GET', `/campaigns/${campaign}/reports/progress`, auditor);
    assert.deepEqual(await funnelCounts(page), apiCounts(progress.body.total));
    assert.equal(await page.getByTestId('stage-link-not_appointed').count(), 0);
    const response = await page.goto(`${app.base}/app/stage?campaign=${campaign}&stage=not_appointed`);
    assert.equal(response.status(), 403);
    assert.equal(await page.getByTestId('stage-row').count(), 0);
  } finally {
    await browser.close();
  }
});

test('every table downloads as the XLSX and CSV the API makes, with the page session', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(app, page, 'office.li');
    await page.goto(`${app.base}/app/?campaign=${campaign}&area=${TOWNSHIP}&cohort=65-79`);
    const types = {
      xlsx: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
      csv: 'text/csv',
    };
    for (const table of ['progress', 'rankings', 'series', 'contacts']) {
      for (const format of ['xlsx', 'csv']) {
        const href = await page.getByTestId(`download-${table}-${format}`).getAttribute('href');
        assert.ok(href.startsWith(`/api/v1/campaigns/${campaign}/reports/${table}?`), href);
        assert.ok(href.includes(`format=${format}`), href);
        if (table !== 'rankings') assert.ok(href.includes(`area=${TOWNSHIP}`), href);
        const response = await page.request.get(`${app.base}${href}`);
        assert.equal(response.status(), 200, `${href}: ${await response.text()}`);
        assert.ok(response.headers()['content-type'].startsWith(types[format]), `${href}: ${response.headers()['content-type']}`);
        if (format === 'csv' && table === 'progress') {
          const csv = await response.text();
          assert.match(csv, /阿勒玛勒村/);
        }
      }
    }
    const progress = await page.getByTestId('download-progress-xlsx').getAttribute('href');
    assert.ok(progress.includes('cohort=65-79'), progress);
    const rankings = await page.getByTestId('download-rankings-xlsx').getAttribute('href');
    assert.ok(rankings.includes(`township=${TOWNSHIP}`), rankings);
  } finally {
    await browser.close();
  }
});

test('on a 360 px phone the dashboard fits the width and its tables scroll inside', async () => {
  const { browser, page } = await phone();
  try {
    await signIn(app, page, 'office.li');
    assert.equal(new URL(page.url()).pathname, '/app/');
    assert.ok(await page.getByTestId('dashboard-funnel').isVisible());
    const widths = await page.evaluate(() => ({
      page: document.documentElement.scrollWidth,
      view: window.innerWidth,
      tables: [...document.querySelectorAll('.table-wrap')].map((w) => ({
        inner: w.scrollWidth,
        outer: w.clientWidth,
        overflow: getComputedStyle(w).overflowX,
      })),
    }));
    assert.ok(widths.page <= widths.view + 1, `the page is ${widths.page} px wide on a ${widths.view} px screen`);
    const ranking = widths.tables[0];
    assert.equal(ranking.overflow, 'auto');
    assert.ok(ranking.inner > ranking.outer, 'the ranking scrolls sideways inside its frame');
    await shot(page, 'dashboard-phone');
  } finally {
    await browser.close();
  }
});

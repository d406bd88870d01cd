// The county office's refusal review queue and the audit log in a real browser: pending
// registrations with their signature and contact history, confirm and return (with the
// reason the cadre then reads), the register's counts, the chain check recorded in the audit
// log, the log's filters, and who may open either page.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startApp, desktop, phone, shot, signIn as signInAt, openCampaign, residentNamed,
  VILLAGE, OTHER_VILLAGE,
} from './harness.mjs';

let app;
let campaign;
/// Each registered resident by name: `{ resident, refusal }`.
const registered = {};

const DAY = 86400000;

/// Three documented attempts on three days, the last reaching the resident, then a refusal
/// signed on the pad, registered through the API as the village's cadre.
async function registerRefusal(name, cadreName, n) {
  const cadre = await app.token(cadreName);
  const resident = await residentNamed(app, name);
  const attempts = [
    [new Date(Date.now() - 2 * DAY), 'no_answer'],
    [new Date(Date.now() - DAY), 'no_answer'],
    [new Date(Date.now() - 60000), 'reached_refused'],
  ];
  for (const [at, outcome] of attempts) {
    const logged = await app.api('POST', `/campaigns/${campaign}/residents/${resident}/attempts`, cadre, {
      attempted_at: at.toISOString(), channel: 'phone_call', contact: 'own_phone', outcome,
    });
    assert.equal(logged.status, 201, JSON.stringify(logged.body));
  }
  const made = await app.api('POST', `/campaigns/${campaign}/residents/${resident}/refusals`, cadre, {
    reason: 'unwilling',
    signer_name: name,
    signer_relation: 'self',
    // Each signature a little different: the same image twice is refused as a copy.
    signature_strokes: {
      width: 400,
      height: 150,
      strokes: [[[20, 110], [80 + 7 * n, 30], [140, 120 - 5 * n], [200, 40], [260, 115], [320, 35], [380, 100]]],
    },
    location: { latitude: 43.43, longitude: 83.26, address: `${name}家` },
  });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  registered[name] = { resident, refusal: made.body.id };
}

before(async () => {
  app = await startApp([
    ['古丽娜尔', VILLAGE, '13899002001'],
    ['吐尔逊·买买提', VILLAGE, '13899002002'],
    ['王建国', OTHER_VILLAGE, '13899002003'],
    ['张秀英', VILLAGE, ''],
  ]);
  campaign = await openCampaign(app);
  await registerRefusal('古丽娜尔', 'cadre.ma', 1);
  await registerRefusal('吐尔逊·买买提', 'cadre.ma', 2);
  await registerRefusal('王建国', 'cadre.other', 3);
});

after(async () => {
  await app?.stop();
});

const signIn = (page, username) => signInAt(app, page, username);
const item = (page, name) => page.locator(`[data-testid=review-item][data-refusal-id="${registered[name].refusal}"]`);
/// The register's total of one status, as the page shows it.
const total = async (page, status) =>
  Number(await page.locator(`[data-testid=register-total] [data-status=${status}]`).innerText());
/// Today in the county's zone, as the pages write dates.
const today = () => new Intl.DateTimeFormat('sv-SE', { timeZone: 'Asia/Shanghai' }).format(new Date());

async function refusedInReport(office) {
  const refreshed = await app.api('POST', `/campaigns/${campaign}/reports/refresh`, office);
  assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
  const report = await app.api('GET', `/campaigns/${campaign}/reports/progress`, office);
  assert.equal(report.status, 200, JSON.stringify(report.body));
  return report.body.total.refused;
}

test('the office sees what each registration rests on and confirms one: the resident counts as refused', async () => {
  const { browser, page } = await desktop();
  try {
    const office = await app.token('office.li');
    assert.equal(await refusedInReport(office), 0);
    await signIn(page, 'office.li');
    await page.goto(`${app.base}/app/refusals`);
    const items = page.getByTestId('review-item');
    assert.equal(await items.count(), 3);
    const shown = await items.evaluateAll((els) => els.map((e) => [e.dataset.refusalId, e.dataset.residentId]));
    assert.deepEqual(
      shown.map(([r, s]) => [Number(r), Number(s)]).sort(),
      Object.values(registered).map((r) => [r.refusal, r.resident]).sort(),
    );
    // Every signature is served and decoded.
    await page.waitForFunction(() =>
      [...document.querySelectorAll('[data-testid=review-signature]')].every((img) => img.complete && img.naturalWidth > 0),
    );
    const widths = await page.getByTestId('review-signature').evaluateAll((imgs) => imgs.map((i) => i.naturalWidth));
    assert.equal(widths.length, 3);
    // The contact history each rests on: three attempts on three days, the rule met.
    const gulnar = item(page, '古丽娜尔');
    assert.equal(await gulnar.getByTestId('review-attempt').count(), 3);
    const contact = await gulnar.getByTestId('review-contact').innerText();
    assert.match(contact, /3 次，3 个不同日期，已联系到本人或亲属/);
    assert.match(contact, /无人接听/);
    assert.match(contact, /已联系，拒绝体检/);
    assert.equal(await gulnar.getByTestId('review-rule').innerText(), '符合规定');
    const facts = await gulnar.innerText();
    assert.match(facts, /不愿意/);
    assert.match(facts, /cadre\.ma/, 'who registered it');
    assert.match(facts, /古丽娜尔家/, 'where');
    assert.match(facts, /古丽娜尔（本人）/, 'the signer and relation');
    // Masked numbers only.
    const html = await page.content();
    for (const id of app.ids) assert.ok(!html.includes(id), 'a full ID number is on the page');
    assert.equal(await total(page, 'pending'), 3);
    assert.equal(await total(page, 'confirmed'), 0);
    const villages = await page.getByTestId('register-village').evaluateAll((rows) => rows.map((r) => r.dataset.village));
    assert.deepEqual(villages, [VILLAGE, OTHER_VILLAGE]);
    assert.ok(await page.getByTestId('register-xlsx').getAttribute('href').then((h) => h.endsWith('format=xlsx')));
    await shot(page, 'review-queue');

    await Promise.all([
      page.waitForURL(/done=confirmed/),
      gulnar.getByTestId('review-confirm').click(),
    ]);
    assert.match(await page.getByTestId('notice').innerText(), /已确认古丽娜尔的拒检登记/);
    assert.equal(await page.getByTestId('review-item').count(), 2);
    assert.equal(await page.locator(`[data-refusal-id="${registered['古丽娜尔'].refusal}"]`).count(), 0);
    assert.equal(await total(page, 'pending'), 2);
    assert.equal(await total(page, 'confirmed'), 1);
    const stored = await app.api('GET', `/refusals/${registered['古丽娜尔'].refusal}`, office);
    assert.equal(stored.body.status, 'confirmed');
    assert.equal(stored.body.reviewed_by_name, 'office.li');

    assert.equal(await refusedInReport(office), 1, 'the progress report counts her as refused');
    await page.goto(`${app.base}/app/`);
    const funnel = page.locator('[data-testid=dashboard-funnel] [data-stage=refused]');
    if ((await funnel.count()) > 0) {
      assert.equal(await funnel.getAttribute('data-count'), '1', 'the dashboard funnel');
    }
  } finally {
    await browser.close();
  }
});

test('a return needs its reason, and the cadre reads it on the phone', async () => {
  const { browser, page } = await desktop();
  try {
    const office = await app.token('office.li');
    await signIn(page, 'office.li');
    await page.goto(`${app.base}/app/refusals`);
    const tursun = item(page, '吐尔逊·买买提');
    const id = registered['吐尔逊·买买提'].refusal;
    // Blanks only: the browser lets it through, the service does not.
    await tursun.getByTestId('review-return-note').fill('   ');
    const [answer] = await Promise.all([
      page.waitForResponse((r) => r.url().endsWith(`/app/refusals/${id}/return`)),
      tursun.getByTestId('review-return').click(),
    ]);
    assert.equal(answer.status(), 422);
    await page.waitForLoadState();
    assert.match(await item(page, '吐尔逊·买买提').getByTestId('review-return-error').innerText(), /退回原因/);
    assert.equal(await page.getByTestId('review-item').count(), 2, 'nothing changed');
    const unchanged = await app.api('GET', `/refusals/${id}`, office);
    assert.equal(unchanged.body.status, 'pending');
    // An empty field is not even sent.
    await item(page, '吐尔逊·买买提').getByTestId('review-return-note').fill('');
    await item(page, '吐尔逊·买买提').getByTestId('review-return').click();
    assert.equal(
      await item(page, '吐尔逊·买买提').getByTestId('review-return-note').evaluate((t) => t.validity.valueMissing),
      true,
    );
    await shot(page, 'review-return-empty');

    const reason = '签名与本人不符，请本人重新签字';
    await item(page, '吐尔逊·买买提').getByTestId('review-return-note').fill(reason);
    await Promise.all([
      page.waitForURL(/done=returned/),
      item(page, '吐尔逊·买买提').getByTestId('review-return').click(),
    ]);
    assert.match(await page.getByTestId('notice').innerText(), /吐尔逊·买买提/);
    assert.equal(await page.getByTestId('review-item').count(), 1);
    assert.equal(await total(page, 'returned'), 1);
    const returned = await app.api('GET', `/refusals/${id}`, office);
    assert.equal(returned.body.status, 'returned');
    assert.equal(returned.body.review_note, reason);
  } finally {
    await browser.close();
  }
  const { browser: phoneBrowser, page: onPhone } = await phone();
  try {
    await signIn(onPhone, 'cadre.ma');
    await onPhone.goto(`${app.base}/m/residents/${registered['吐尔逊·买买提'].resident}/refusal`);
    const earlier = await onPhone.getByTestId('refusal-earlier').innerText();
    assert.match(earlier, /已退回/);
    assert.match(earlier, /签名与本人不符，请本人重新签字/);
    await shot(onPhone, 'review-returned-on-phone');
  } finally {
    await phoneBrowser.close();
  }
});

test('the chain check is recorded and shown with its date; the audit log lists and filters the reviews', async () => {
  const { browser, page } = await desktop();
  try {
    // The command line's check is what the page shows first.
    const printed = app.run(['refusals', 'verify']);
    assert.match(printed, /intact/);
    await signIn(page, 'office.li');
    await page.goto(`${app.base}/app/refusals`);
    assert.equal(await page.getByTestId('chain-result').getAttribute('data-ok'), 'true');
    assert.match(await page.getByTestId('chain-check').innerText(), /命令行/);
    assert.ok((await page.getByTestId('chain-at').innerText()).startsWith(today()));

    await Promise.all([page.waitForURL(/done=verified/), page.getByTestId('verify-now').click()]);
    const check = await page.getByTestId('chain-check').innerText();
    assert.match(check, /完好/);
    assert.match(check, /office\.li/);
    assert.doesNotMatch(check, /命令行/);
    assert.match(check, /共 3 名居民的 5 条记录/);
    assert.ok((await page.getByTestId('chain-at').innerText()).startsWith(today()));

    await page.goto(`${app.base}/app/audit`);
    const actions = await page.getByTestId('audit-row').evaluateAll((rows) => rows.map((r) => r.dataset.action));
    for (const action of ['refusal.confirm', 'refusal.return', 'refusal.verify', 'refusal.register']) {
      assert.ok(actions.includes(action), `${action} is listed`);
    }
    const ids = await page.getByTestId('audit-row').evaluateAll((rows) => rows.map((r) => Number(r.dataset.entryId)));
    assert.deepEqual(ids, [...ids].sort((a, b) => b - a), 'newest first');
    const html = await page.content();
    for (const id of app.ids) assert.ok(!html.includes(id), 'a full ID number is in the log');
    await shot(page, 'review-audit');

    await page.getByTestId('audit-action').selectOption('refusal.return');
    await Promise.all([page.waitForURL(/action=refusal\.return/), page.getByTestId('audit-filter').click()]);
    const returns = page.getByTestId('audit-row');
    assert.equal(await returns.count(), 1);
    assert.match(await returns.innerText(), /签名与本人不符/);
    assert.match(await returns.innerText(), /office\.li/);

    // The same filter through the API: the page shows what the API returns.
    const office = await app.token('office.li');
    const api = await app.api('GET', '/audit?action=refusal.verify', office);
    await page.goto(`${app.base}/app/audit?action=refusal.verify`);
    assert.equal(await page.getByTestId('audit-row').count(), api.body.entries.length);
    assert.equal(api.body.entries.length, 2, 'the command line and the page');

    // Days: nothing tomorrow; a date that is not one is told.
    const tomorrow = new Intl.DateTimeFormat('sv-SE', { timeZone: 'Asia/Shanghai' }).format(new Date(Date.now() + DAY));
    await page.goto(`${app.base}/app/audit?since=${tomorrow}`);
    assert.equal(await page.getByTestId('audit-row').count(), 0);
    const bad = await page.goto(`${app.base}/app/audit?since=2026-02-30`);
    assert.equal(bad.status(), 422);
    assert.match(await page.getByTestId('audit-error').innerText(), /开始日期/);
  } finally {
    await browser.close();
  }
});

test('the auditor reads the queue and the log but cannot review; cadres and townships are turned away', async () => {
  const { browser, page } = await desktop();
  try {
    await signIn(page, 'auditor.zhao');
    await page.goto(`${app.base}/app/refusals`);
    assert.equal(await page.getByTestId('review-item').count(), 1);
    await page.waitForFunction(() => {
      const img = document.querySelector('[data-testid=review-signature]');
      return img.complete && img.naturalWidth > 0;
    });
    assert.equal(await page.getByTestId('review-confirm').count(), 0);
    assert.equal(await page.getByTestId('review-return').count(), 0);
    assert.equal(await page.getByTestId('verify-now').count(), 0);
    assert.equal(await page.getByTestId('chain-result').getAttribute('data-ok'), 'true');
    const id = registered['王建国'].refusal;
    const posted = await page.evaluate(async (id) => {
      const csrf = document.querySelector('meta[name=csrf-token]').content;
      const r = await fetch(`/app/refusals/${id}/confirm`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: `_csrf=${encodeURIComponent(csrf)}`,
      });
      return r.status;
    }, id);
    assert.equal(posted, 403);
    const office = await app.token('office.li');
    assert.equal((await app.api('GET', `/refusals/${id}`, office)).body.status, 'pending');
    await page.goto(`${app.base}/app/audit`);
    assert.ok((await page.getByTestId('audit-row').count()) > 0);
    // At a phone's width the queue still reads.
    await page.setViewportSize({ width: 360, height: 740 });
    await page.goto(`${app.base}/app/refusals`);
    await page.waitForFunction(() => document.querySelector('[data-testid=review-signature]').naturalWidth > 0);
    await shot(page, 'review-queue-360');
  } finally {
    await browser.close();
  }
  for (const [username, open] of [['cadre.ma', phone], ['township.wang', desktop]]) {
    const { browser: other, page: theirs } = await open();
    try {
      await signIn(theirs, username);
      const response = await theirs.goto(`${app.base}/app/refusals`);
      assert.equal(response.status(), 403, username);
      assert.match(await theirs.locator('h1').innerText(), /无权访问/);
      assert.equal(await theirs.getByTestId('review-item').count(), 0);
      const audit = await theirs.goto(`${app.base}/app/audit`);
      assert.equal(audit.status(), 403, `${username}: the audit log`);
    } finally {
      await other.close();
    }
  }
});

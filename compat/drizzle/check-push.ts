// Proves that `drizzle-kit push` with the shipped schema.ts and
// drizzle.config.ts changes nothing on a database the crate migrated, and that
// schema.ts declares exactly what the crate's migrations create.
//
//   1. crate:   an empty database, migrated by the crate. Push must find no
//               change.
//   2. legacy:  an empty database pushed from legacy-schema.ts (the services'
//               original three tables, as drizzle-kit made them), then
//               migrated by the crate. Push must find no change.
//   3. drizzle: an empty database pushed from schema.ts alone. A second push
//               must find no change.
//   4. The catalogs (every column with its type, NOT NULL and default, every
//      constraint and index as PostgreSQL prints them, triggers, functions) of
//      1 and 2 must equal that of 3. drizzle-kit's push does not compare index
//      expressions, operator classes, partial-index predicates or check
//      bodies, so this is what holds those parts of schema.ts to the
//      migrations.
//
// Run by check-push.sh, which installs the packages and builds the crate's
// migration runner: DREAMNET_MIGRATE is a program that migrates the database
// at DATABASE_URL. DREAMNET_TEST_DATABASE_URL names the server (default
// postgres://postgres@127.0.0.1:5432/postgres). Exits 1 on any failure.

import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";

const here = path.dirname(fileURLToPath(import.meta.url));
const adminUrl = process.env.DREAMNET_TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const migrate = process.env.DREAMNET_MIGRATE;
if (!migrate) {
  console.error("DREAMNET_MIGRATE must name the crate's migration runner (check-push.sh sets it)");
  process.exit(2);
}
const drizzleKit = path.join(here, "node_modules", ".bin", "drizzle-kit");

function urlFor(db: string): string {
  const u = new URL(adminUrl);
  u.pathname = `/${db}`;
  return u.toString();
}

async function withClient<T>(url: string, f: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await f(client);
  } finally {
    await client.end();
  }
}

const prefix = `drizzle_check_${process.pid}`;
const created: string[] = [];

async function createDb(suffix: string): Promise<string> {
  const name = `${prefix}_${suffix}`;
  await withClient(adminUrl, async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await c.query(`CREATE DATABASE ${name}`);
  });
  created.push(name);
  return urlFor(name);
}

async function dropAll(): Promise<void> {
  await withClient(adminUrl, async (c) => {
    for (const name of created) await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  });
}

interface Run {
  status: number | null;
  output: string;
}

function run(cmd: string, args: string[], url: string): Run {
  const r = spawnSync(cmd, args, {
    cwd: here,
    env: { ...process.env, DATABASE_URL: url },
    encoding: "utf8",
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (r.error) throw r.error;
  // drizzle-kit draws a spinner with ANSI escapes; keep the text.
  const output = `${r.stdout}${r.stderr}`.replace(/\x1b\[[0-9;]*[A-Za-z]/g, "");
  return { status: r.status, output };
}

/** The versions of the migrations on disk, as diesel records them. */
function migrationsOnDisk(): string[] {
  const dir = process.env.DREAMNET_MIGRATIONS ?? path.join(here, "..", "..", "migrations");
  return readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory())
    .map((e) => e.name.split("_")[0].replace(/-/g, ""))
    .sort();
}

/**
 * Migrates `url` with the crate, and checks that every migration on disk was
 * applied: a runner built before a migration was added would leave it out.
 */
async function crateMigrate(url: string): Promise<void> {
  const r = run(migrate!, [], url);
  if (r.status !== 0) throw new Error(`the crate's migrations failed:\n${r.output}`);
  const applied = await withClient(url, async (c) =>
    (await c.query<{ version: string }>("SELECT version FROM __diesel_schema_migrations ORDER BY version")).rows.map(
      (row) => row.version,
    ),
  );
  const missing = migrationsOnDisk().filter((v) => !applied.includes(v));
  if (missing.length > 0) {
    throw new Error(`the migration runner ${migrate} does not include ${missing.join(", ")}: rebuild it`);
  }
}

/** `drizzle-kit push` as a service's deploy runs it, with the shipped config. */
function push(url: string): Run {
  return run(drizzleKit, ["push", "--config", "drizzle.config.ts", "--verbose", "--force"], url);
}

/**
 * Whether push executed nothing. Fails closed: anything but drizzle-kit's own
 * "No changes detected", with no statement listed and a clean exit, counts as
 * a change.
 */
function pushedNothing(r: Run): boolean {
  return (
    r.status === 0 &&
    /\[i\] No changes detected/.test(r.output) &&
    !/You are about to execute|Changes applied|Found data-loss statements/.test(r.output)
  );
}

/** The statements push listed, for the failure message. */
function statements(r: Run): string {
  const lines = r.output
    .split("\n")
    .filter((l) => !/Pulling schema|Reading config|Using 'pg' driver|No config path/.test(l));
  return lines.map((l) => `    ${l}`).join("\n").trimEnd();
}

/**
 * The public schema as PostgreSQL prints it, one sorted line per object,
 * without the crate's `__diesel_schema_migrations`.
 */
async function catalog(url: string): Promise<string[]> {
  const queries = [
    `SELECT format('table %s kind=%s rls=%s persistence=%s', c.relname, c.relkind, c.relrowsecurity, c.relpersistence)
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        AND c.relname <> '__diesel_schema_migrations'`,
    `SELECT format('column %s.%s %s%s%s%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod),
                   CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
                   coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), ''),
                   CASE WHEN a.attidentity <> '' OR a.attgenerated <> '' THEN ' identity/generated' ELSE '' END)
       FROM pg_attribute a
       JOIN pg_class c ON c.oid = a.attrelid
       JOIN pg_namespace n ON n.oid = c.relnamespace
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
        AND c.relname <> '__diesel_schema_migrations'`,
    `SELECT format('constraint %s.%s %s', c.relname, k.conname, pg_get_constraintdef(k.oid))
       FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relname <> '__diesel_schema_migrations'`,
    `SELECT format('index %s%s', pg_get_indexdef(i.indexrelid), CASE WHEN i.indisvalid THEN '' ELSE ' INVALID' END)
       FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND c.relname <> '__diesel_schema_migrations'`,
    `SELECT format('trigger %s', pg_get_triggerdef(t.oid))
       FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = 'public' AND NOT t.tgisinternal`,
    `SELECT format('function %s(%s)', p.proname, pg_get_function_identity_arguments(p.oid))
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'`,
    `SELECT format('type %s', t.typname)
       FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
      WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r', 'm')`,
    `SELECT format('extension %s', e.extname) FROM pg_extension e WHERE e.extname <> 'plpgsql'`,
  ];
  return withClient(url, async (c) => {
    const lines: string[] = [];
    for (const q of queries) {
      const r = await c.query<{ format: string }>(q);
      lines.push(...r.rows.map((row) => row.format));
    }
    return lines.sort();
  });
}

/**
 * Functions and triggers the crate's migrations create, which a Drizzle
 * schema cannot declare: push leaves them alone (checks 1 and 2 see them
 * unchanged), and the crate's migrations create them on a database Drizzle
 * made (check 3 has none), so the comparison of catalogs (4) leaves them out.
 * The triggers are on the crate's own rollup tables, never on a shared one.
 */
const CRATE_FUNCTIONS = [
  "function dreamnet_spend_key_credits(",
  "function event_rollups_users_gone(",
  "function event_rollups_type_users_gone(",
  "trigger CREATE TRIGGER event_daily_users_gone AFTER DELETE ON public.event_daily_users ",
  "trigger CREATE TRIGGER event_daily_type_users_gone AFTER DELETE ON public.event_daily_type_users ",
];

function catalogDiff(expected: string[], actual: string[], withoutCrateFunctions = false): string[] {
  if (withoutCrateFunctions) {
    const ours = (l: string) => CRATE_FUNCTIONS.some((f) => l.startsWith(f));
    expected = expected.filter((l) => !ours(l));
    actual = actual.filter((l) => !ours(l));
  }
  const e = new Set(expected);
  const a = new Set(actual);
  return [
    ...expected.filter((l) => !a.has(l)).map((l) => `    - ${l}`),
    ...actual.filter((l) => !e.has(l)).map((l) => `    + ${l}`),
  ];
}

let passed = 0;
let failed = 0;

function report(ok: boolean, what: string, detail?: string): void {
  if (ok) {
    passed += 1;
    console.log(`ok   ${what}`);
  } else {
    failed += 1;
    console.log(`FAIL ${what}`);
    if (detail) console.log(detail);
  }
}

/** Push must change nothing on `url`, by its own word and by the catalog. */
async function checkPushIsNoop(label: string, url: string): Promise<string[]> {
  const before = await catalog(url);
  const started = Date.now();
  const r = push(url);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  const after = await catalog(url);
  const diff = catalogDiff(before, after);
  const ok = pushedNothing(r) && diff.length === 0;
  let detail = `  drizzle-kit push (exit ${r.status}) printed:\n${statements(r)}`;
  if (diff.length > 0) detail += `\n  and changed the catalog (- before, + after):\n${diff.join("\n")}`;
  report(ok, `${label}: drizzle-kit push changes nothing (${secs} s)`, detail);
  return before;
}

async function main(): Promise<void> {
  // 1. The crate alone.
  const crateUrl = await createDb("crate");
  await crateMigrate(crateUrl);
  const crate = await checkPushIsNoop("database the crate created", crateUrl);

  // 2. The services' original tables, then the crate.
  const legacyUrl = await createDb("legacy");
  const legacyPush = run(
    drizzleKit,
    ["push", "--dialect", "postgresql", "--schema", "./legacy-schema.ts", "--url", legacyUrl, "--force"],
    legacyUrl,
  );
  if (legacyPush.status !== 0) throw new Error(`pushing legacy-schema.ts failed:\n${legacyPush.output}`);
  await crateMigrate(legacyUrl);
  const legacy = await checkPushIsNoop("database Drizzle created from the original schema, then the crate migrated", legacyUrl);

  // 3. schema.ts alone.
  const drizzleUrl = await createDb("drizzle");
  const created = push(drizzleUrl);
  report(created.status === 0, "schema.ts pushes onto an empty database", statements(created));
  await checkPushIsNoop("database Drizzle created from schema.ts", drizzleUrl);
  const declared = await catalog(drizzleUrl);

  // 4. Same catalogs.
  for (const [label, actual] of [
    ["the crate's migrations", crate],
    ["the original schema migrated by the crate", legacy],
  ] as const) {
    const diff = catalogDiff(declared, actual, true);
    report(
      diff.length === 0,
      `schema.ts declares exactly what ${label} create (${declared.length} objects)`,
      `  - declared by schema.ts only, + created by ${label} only:\n${diff.join("\n")}`,
    );
  }
}

try {
  await main();
} catch (e) {
  failed += 1;
  console.log(`FAIL ${e instanceof Error ? e.message : String(e)}`);
} finally {
  await dropAll().catch((e) => console.log(`(could not drop the check databases: ${e})`));
}
console.log(`check-push: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);

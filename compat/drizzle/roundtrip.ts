// The TypeScript half of tests/drizzle_roundtrip.rs: reads, through Drizzle
// ORM and the shipped schema.ts, what the crate wrote, and writes users, a
// legacy API key and events the way the services do, for the crate to read.
//
// Input (stdin, JSON): the ids the crate wrote and the plain text of the key
// it issued. Output (stdout, one JSON document): what Drizzle read and wrote,
// for the Rust test to check. DATABASE_URL names the database.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { eq, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/node-postgres";
import { pgTable, timestamp, uuid } from "drizzle-orm/pg-core";
import pg from "pg";
import { apiKeys, events, users } from "./schema.ts";

interface Input {
  adaId: string;
  adaEmailOtherCase: string;
  adaWalletChecksum: string;
  adaKeySecret: string;
  eventId: string;
  bobId: string;
}

const input: Input = JSON.parse(readFileSync(0, "utf8"));

// The services' way of storing a key: SHA-256 of the plain text, lower-case hex.
const sha256Hex = (s: string) => createHash("sha256").update(s).digest("hex");

// The same column read as the string PostgreSQL sends, microseconds included.
const usersPrecise = pgTable("users", {
  id: uuid("id").primaryKey(),
  createdAt: timestamp("created_at", { withTimezone: true, mode: "string" }).notNull(),
});

/** A refused write: PostgreSQL's error code and the constraint it names. */
async function refusal(write: () => Promise<unknown>): Promise<{ code?: string; constraint?: string } | null> {
  try {
    await write();
    return null;
  } catch (e) {
    // drizzle-orm wraps the driver's error; the PostgreSQL fields are on its cause.
    const err = ((e as { cause?: unknown }).cause ?? e) as { code?: string; constraint?: string };
    return { code: err.code, constraint: err.constraint };
  }
}

const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 2 });
const db = drizzle(pool);

try {
  // What the crate wrote.
  const [ada] = await db.select().from(users).where(eq(users.id, input.adaId));
  const [adaPrecise] = await db.select().from(usersPrecise).where(eq(usersPrecise.id, input.adaId));
  // The crate's matching: emails case-insensitively, wallets in lower case.
  const [byEmail] = await db
    .select({ id: users.id })
    .from(users)
    .where(sql`lower(${users.email}) = lower(${input.adaEmailOtherCase})`);
  const [byWallet] = await db
    .select({ id: users.id })
    .from(users)
    .where(eq(users.walletAddress, input.adaWalletChecksum.toLowerCase()));
  const [adaKey] = await db.select().from(apiKeys).where(eq(apiKeys.hashedKey, sha256Hex(input.adaKeySecret)));
  const [event] = await db.select().from(events).where(eq(events.id, input.eventId));
  const payload = event.payload as { big: number; ratio: number; ip: string };

  // Changing a JSON document: merged inside PostgreSQL it keeps what
  // JavaScript cannot hold; read, changed and written back whole it does not.
  await db
    .update(users)
    .set({
      metadata: sql`${users.metadata} || ${JSON.stringify({ seenBy: "drizzle" })}::jsonb`,
      // The crate's rule: updated_at moves forward on every update.
      updatedAt: sql`greatest(now(), ${users.updatedAt} + interval '1 microsecond')`,
    })
    .where(eq(users.id, input.adaId));
  const [bob] = await db.select().from(users).where(eq(users.id, input.bobId));
  await db
    .update(users)
    .set({ metadata: { ...bob.metadata, seenBy: "drizzle" }, updatedAt: sql`greatest(now(), ${users.updatedAt} + interval '1 microsecond')` })
    .where(eq(users.id, input.bobId));

  // What the services write: a user with a checksummed (mixed-case) wallet
  // and no tier, a key issued their way, events with and without a user.
  const [grace] = await db
    .insert(users)
    .values({
      email: "Grace.Hopper@Example.COM",
      walletAddress: "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
      metadata: { source: "drizzle", ratio: 0.1, nested: { list: [1, "two", null, true] }, text: "日本語 ✓" },
    })
    .returning();
  const legacySecret = "legacy-key-0001-of-the-services";
  const [legacyKey] = await db
    .insert(apiKeys)
    .values({ userId: grace.id, service: "billing", hashedKey: sha256Hex(legacySecret) })
    .returning();
  const graceEventAt = new Date("2026-11-25T11:00:00.987Z");
  const [graceEvent] = await db
    .insert(events)
    .values({
      userId: grace.id,
      eventType: "user.signup",
      payload: { plan: "pro", amount: 12.5, tags: ["a", "b"] },
      createdAt: graceEventAt,
    })
    .returning();
  const [systemEvent] = await db.insert(events).values({ eventType: "system.deploy" }).returning();

  // Deleting a user through Drizzle: the database deletes their keys and
  // detaches their events, as the crate does.
  const leavingSecret = "legacy-key-0002-of-a-user-who-leaves";
  const [leaving] = await db.insert(users).values({ email: "leaving@example.com" }).returning();
  await db.insert(apiKeys).values({ userId: leaving.id, service: "billing", hashedKey: sha256Hex(leavingSecret) });
  const [leavingEvent] = await db
    .insert(events)
    .values({ userId: leaving.id, eventType: "user.leaving", payload: { reason: "test" } })
    .returning();
  await db.delete(users).where(eq(users.id, leaving.id));

  // What the database refuses from any writer.
  const refused = {
    emailOtherCase: await refusal(() => db.insert(users).values({ email: "grace.hopper@example.com" })),
    walletLowerCase: await refusal(() =>
      db.insert(users).values({ walletAddress: "0xfb6916095ca1df60bb79ce92ce3ea74c37c5d359" }),
    ),
    neitherEmailNorWallet: await refusal(() => db.insert(users).values({ passportTier: "visitor" })),
    keyWithoutUser: await refusal(() =>
      db.insert(apiKeys).values({ userId: "00000000-0000-4000-8000-000000000000", service: "x", hashedKey: "x" }),
    ),
  };

  const out = {
    read: {
      ada: {
        email: ada.email,
        walletAddress: ada.walletAddress,
        passportTier: ada.passportTier,
        createdAtDate: ada.createdAt.toISOString(),
        createdAtString: adaPrecise.createdAt,
        metadataBig: String((ada.metadata as { big: number }).big),
        metadata: ada.metadata,
        preferences: ada.preferences,
      },
      foundByEmail: byEmail?.id ?? null,
      foundByWallet: byWallet?.id ?? null,
      adaKey: adaKey
        ? { id: adaKey.id, userId: adaKey.userId, service: adaKey.service, keyPrefix: adaKey.keyPrefix }
        : null,
      event: {
        userId: event.userId,
        eventType: event.eventType,
        createdAtDate: event.createdAt.toISOString(),
        payloadBig: String(payload.big),
        payloadBigIsSafeInteger: Number.isSafeInteger(payload.big),
        payloadRatio: payload.ratio,
        payloadIp: payload.ip,
      },
    },
    wrote: {
      graceId: grace.id,
      gracePassportTier: grace.passportTier,
      gracePreferences: grace.preferences,
      legacyKeyId: legacyKey.id,
      legacySecret,
      graceEventId: graceEvent.id,
      graceEventAt: graceEventAt.toISOString(),
      systemEventId: systemEvent.id,
      systemEventPayload: systemEvent.payload,
      leavingSecret,
      leavingEventId: leavingEvent.id,
    },
    refused,
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
} finally {
  await pool.end();
}

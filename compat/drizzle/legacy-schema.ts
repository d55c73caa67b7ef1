import { jsonb, pgTable, timestamp, uuid, varchar } from "drizzle-orm/pg-core";

export const users = pgTable("users", {
  id: uuid("id").primaryKey(),
  email: varchar("email", { length: 255 }).unique(),
  walletAddress: varchar("wallet_address", { length: 42 }).unique(),
  passportTier: varchar("passport_tier", { length: 50 }).default("visitor"),
  createdAt: timestamp("created_at", { withTimezone: true }),
  updatedAt: timestamp("updated_at", { withTimezone: true }),
  metadata: jsonb("metadata"),
  preferences: jsonb("preferences"),
});

export const apiKeys = pgTable("api_keys", {
  id: uuid("id").primaryKey(),
  userId: uuid("user_id").references(() => users.id),
  service: varchar("service", { length: 100 }),
  hashedKey: varchar("hashed_key", { length: 255 }),
  createdAt: timestamp("created_at", { withTimezone: true }),
  lastUsed: timestamp("last_used", { withTimezone: true }),
});

export const events = pgTable("events", {
  id: uuid("id").primaryKey(),
  userId: uuid("user_id").references(() => users.id),
  eventType: varchar("event_type", { length: 100 }),
  payload: jsonb("payload"),
  createdAt: timestamp("created_at", { withTimezone: true }),
});

// drizzle-kit's configuration for the shared database: what a service's
// `db:push` should run with (copy it beside schema.ts).
//
// `__diesel_schema_migrations` is dreamnet-db's record of applied migrations:
// Drizzle must neither drop nor change it, so push never looks at it.
import { defineConfig } from "drizzle-kit";

const url = process.env.DATABASE_URL;
if (!url) throw new Error("DATABASE_URL must name the database to push to");

export default defineConfig({
  dialect: "postgresql",
  schema: "./schema.ts",
  tablesFilter: ["!__diesel_schema_migrations"],
  dbCredentials: { url },
});

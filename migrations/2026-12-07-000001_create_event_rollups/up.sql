-- Daily rollups of `events` for the analytics questions that read every
-- event of their range (active users, cohorts, top event types). They are
-- filled by the crate (`Analytics::refresh_rollups`), one whole UTC day at
-- a time, each day in one transaction that reads `events` and writes only
-- these tables: no trigger on `events`, so the other services' writes cost
-- nothing more and nothing of theirs can fail because of a rollup. A day is
-- read from the rollups only once its row in `event_rollup_days` exists
-- (committed with the day's rows); every other part of a range is answered
-- from `events` itself, so an answer is the same whether or not a day is
-- rolled up.
--
-- New tables: creating them takes no lock on `events`; the foreign keys to
-- `users` take a brief SHARE ROW EXCLUSIVE lock on it while the tables are
-- created empty. ON DELETE CASCADE drops a deleted user's rows (whoever
-- deletes the user), so the rollups never keep a user the database no
-- longer has.
-- squawk-ignore-file prefer-text-field
-- (`event_type` has the length of `events.event_type`.)
-- squawk-ignore-file require-lock-timeout
-- squawk-ignore-file require-statement-timeout
-- (New, empty tables: building their indexes takes no time; the lock on
-- `users` for the foreign keys is held for the creation of empty tables.)
-- One row per rolled-up day: its events and distinct users.
CREATE TABLE IF NOT EXISTS event_rollup_days (
    day date PRIMARY KEY,
    sealed_at timestamptz NOT NULL DEFAULT now(),
    events bigint NOT NULL,
    users bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS event_daily_users (
    day date NOT NULL,
    user_id uuid NOT NULL,
    CONSTRAINT event_daily_users_pkey PRIMARY KEY (day, user_id),
    CONSTRAINT event_daily_users_user_id_users_id_fk FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS event_daily_users_user_id_day_idx ON event_daily_users (user_id, day);

CREATE TABLE IF NOT EXISTS event_daily_type_users (
    event_type varchar(100) NOT NULL,
    day date NOT NULL,
    user_id uuid NOT NULL,
    CONSTRAINT event_daily_type_users_pkey PRIMARY KEY (event_type, day, user_id),
    CONSTRAINT event_daily_type_users_user_id_users_id_fk FOREIGN KEY (user_id)
        REFERENCES users (id) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS event_daily_type_users_user_id_idx
    ON event_daily_type_users (user_id, event_type, day);

-- Per rolled-up day and event type: events and distinct users.
CREATE TABLE IF NOT EXISTS event_daily_types (
    day date NOT NULL,
    event_type varchar(100) NOT NULL,
    events bigint NOT NULL,
    users bigint NOT NULL,
    CONSTRAINT event_daily_types_pkey PRIMARY KEY (day, event_type),
    CONSTRAINT event_daily_types_events_positive CHECK (events > 0)
);

-- Distinct users per ISO week (from Monday) and calendar month whose days
-- are all rolled up: `event_type` '' for every type (event types are never
-- empty), one row per type seen otherwise. The '' row exists for every
-- rolled-up period, users or not.
CREATE TABLE IF NOT EXISTS event_period_users (
    period varchar(5) NOT NULL,
    event_type varchar(100) NOT NULL,
    start date NOT NULL,
    users bigint NOT NULL,
    CONSTRAINT event_period_users_pkey PRIMARY KEY (period, event_type, start),
    CONSTRAINT event_period_users_period_known CHECK (period IN ('week', 'month'))
);

-- A user deleted after their days were rolled up (by anyone: the foreign
-- keys above cascade) leaves the stored counts of those days, weeks and
-- months too, so that a rolled-up answer stays the one `events` would
-- give. These triggers are on the crate's own tables only.
CREATE OR REPLACE FUNCTION event_rollups_users_gone() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    UPDATE event_rollup_days d SET users = d.users - g.n
      FROM (SELECT day, count(*) AS n FROM gone GROUP BY day) g
     WHERE d.day = g.day;
    UPDATE event_period_users p SET users = p.users - g.n
      FROM (SELECT x.period, x.start, count(DISTINCT x.user_id) AS n FROM (
              SELECT 'week' AS period, date_trunc('week', day::timestamp)::date AS start, user_id
                FROM gone
              UNION ALL
              SELECT 'month', date_trunc('month', day::timestamp)::date, user_id FROM gone) x
             GROUP BY 1, 2) g
     WHERE p.period = g.period AND p.start = g.start AND p.event_type = '';
    RETURN NULL;
END
$body$;

CREATE OR REPLACE FUNCTION event_rollups_type_users_gone() RETURNS trigger
LANGUAGE plpgsql AS $body$
BEGIN
    UPDATE event_daily_types t SET users = t.users - g.n
      FROM (SELECT day, event_type, count(*) AS n FROM gone GROUP BY 1, 2) g
     WHERE t.day = g.day AND t.event_type = g.event_type;
    UPDATE event_period_users p SET users = p.users - g.n
      FROM (SELECT x.period, x.start, x.event_type, count(DISTINCT x.user_id) AS n FROM (
              SELECT 'week' AS period, date_trunc('week', day::timestamp)::date AS start,
                     event_type, user_id
                FROM gone
              UNION ALL
              SELECT 'month', date_trunc('month', day::timestamp)::date, event_type, user_id
                FROM gone) x
             GROUP BY 1, 2, 3) g
     WHERE p.period = g.period AND p.start = g.start AND p.event_type = g.event_type;
    RETURN NULL;
END
$body$;

DROP TRIGGER IF EXISTS event_daily_users_gone ON event_daily_users;
CREATE TRIGGER event_daily_users_gone AFTER DELETE ON event_daily_users
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION event_rollups_users_gone();

DROP TRIGGER IF EXISTS event_daily_type_users_gone ON event_daily_type_users;
CREATE TRIGGER event_daily_type_users_gone AFTER DELETE ON event_daily_type_users
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT
    EXECUTE FUNCTION event_rollups_type_users_gone();

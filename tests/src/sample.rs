//! SQL for the test databases.

/// An invoicing database with `rows` invoices (about 250 bytes each), deterministic and
/// varied so that it compresses only moderately.
/// A manifest of site `acme`, target `main`, with no streams (for gRPC-level tests).
pub fn empty_manifest(snapshot_id: &str) -> nex_backup_shared::manifest::Manifest {
    nex_backup_shared::manifest::Manifest {
        site: "acme".into(),
        target: "main".into(),
        snapshot_id: snapshot_id.into(),
        created_unix_ms: 1,
        streams: vec![],
        row_counts: vec![],
        row_counts_from_dump: false,
        source: Default::default(),
        duration_ms: 1,
        files: vec![],
    }
}

pub fn invoices_sql(rows: u32) -> String {
    let customers = (rows / 10).max(1);
    format!(
        "CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, country text, meta jsonb);
         CREATE TABLE invoices (id bigint PRIMARY KEY, customer_id int REFERENCES customers(id), issued date,
             total numeric(12,2), status text, lines jsonb, pdf bytea, note text);
         INSERT INTO customers SELECT g, 'Customer ' || g, 'c' || g || '@example.com',
             (ARRAY['SK','CZ','AT','DE'])[1 + g % 4], jsonb_build_object('tier', g % 3)
             FROM generate_series(1, {customers}) g;
         INSERT INTO invoices SELECT g, 1 + g % {customers}, date '2024-01-01' + (g % 700), (g * 37 % 100000) / 100.0,
             (ARRAY['draft','sent','paid'])[1 + g % 3],
             jsonb_build_array(jsonb_build_object('item', md5(g::text), 'qty', g % 7, 'price', g % 1000)),
             decode(md5(g::text) || md5((g + 1)::text), 'hex'), repeat(md5((g * 7)::text), 1 + g % 3)
             FROM generate_series(1, {rows}) g;"
    )
}

/// A database exercising the object kinds a restore must reproduce: non-ASCII names,
/// enums, jsonb, bytea, arrays, large objects, partitions, views, a materialized view,
/// functions, triggers, sequences, an extension, comments and grants to roles.
pub const FIDELITY_SQL: &str = r#"
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'nexb_reader') THEN CREATE ROLE nexb_reader; END IF;
END $$;
CREATE EXTENSION pg_trgm;
CREATE SCHEMA "fakturácia";
CREATE TYPE "fakturácia"."stav" AS ENUM ('návrh', 'odoslaná', 'zaplatená');
CREATE TABLE "fakturácia"."zákazník" (
  id serial PRIMARY KEY, "meno" text NOT NULL, "štítky" text[], nums int[], meta jsonb, logo bytea,
  created timestamptz NOT NULL DEFAULT '2025-01-01 00:00:00+00');
INSERT INTO "fakturácia"."zákazník" ("meno", "štítky", nums, meta, logo)
  SELECT 'Zákazník č. ' || g || ' — ľščťž', ARRAY['a' || g, 'ü' || (g % 7)], ARRAY[g, g * 2, NULL],
         jsonb_build_object('g', g, 'nested', jsonb_build_object('ok', g % 2 = 0), 'list', jsonb_build_array(g, 'x')),
         decode(md5(g::text), 'hex')
  FROM generate_series(1, 3000) g;
CREATE TABLE "fakturácia"."faktúra" (
  id bigserial PRIMARY KEY, "zákazník_id" int REFERENCES "fakturácia"."zákazník"(id),
  stav "fakturácia"."stav" NOT NULL, suma numeric(12,2), vystavená date);
CREATE FUNCTION "fakturácia".zaokrúhli() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN NEW.suma := round(NEW.suma, 1); RETURN NEW; END $f$;
CREATE TRIGGER zaokrúhli BEFORE INSERT OR UPDATE ON "fakturácia"."faktúra"
  FOR EACH ROW EXECUTE FUNCTION "fakturácia".zaokrúhli();
INSERT INTO "fakturácia"."faktúra" ("zákazník_id", stav, suma, vystavená)
  SELECT 1 + g % 3000, (ARRAY['návrh','odoslaná','zaplatená']::"fakturácia"."stav"[])[1 + g % 3],
         g * 1.37, date '2025-01-01' + g % 365
  FROM generate_series(1, 20000) g;
CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, payload jsonb) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events SELECT g, date '2025-06-01' + g % 400, jsonb_build_object('n', g) FROM generate_series(1, 5000) g;
CREATE VIEW "fakturácia"."otvorené" AS SELECT * FROM "fakturácia"."faktúra" WHERE stav <> 'zaplatená';
CREATE MATERIALIZED VIEW "fakturácia"."súhrn" AS
  SELECT "zákazník_id", count(*) AS n, sum(suma) AS spolu FROM "fakturácia"."faktúra" GROUP BY 1;
CREATE SEQUENCE "fakturácia"."číslo_faktúry" START 1000;
SELECT setval('"fakturácia"."číslo_faktúry"', 4242);
SELECT lo_from_bytea(0, convert_to(repeat('veľký objekt ', 5000), 'UTF8'));
SELECT lo_from_bytea(0, decode(repeat(md5('lo'), 100), 'hex'));
CREATE INDEX ON "fakturácia"."zákazník" USING gin ("meno" gin_trgm_ops);
COMMENT ON TABLE "fakturácia"."faktúra" IS 'Faktúry — invoices';
GRANT USAGE ON SCHEMA "fakturácia" TO nexb_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA "fakturácia" TO nexb_reader;
"#;

/// One query returning `table|md5` for every table and materialized view, plus large
/// objects and sequence values, so two databases can be compared by content.
pub const CHECKSUMS_SQL: &str = r#"
CREATE OR REPLACE FUNCTION pg_temp.nexb_checksums() RETURNS TABLE(obj text, sum text) LANGUAGE plpgsql AS $f$
DECLARE r record;
BEGIN
  FOR r IN SELECT format('%I.%I', n.nspname, c.relname) AS q, c.relkind FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind IN ('r', 'm', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\_%' ORDER BY 1 LOOP
    obj := r.q;
    IF r.relkind = 'S' THEN
      EXECUTE format('SELECT last_value::text || is_called::text FROM %s', r.q) INTO sum;
    ELSE
      EXECUTE format('SELECT md5(coalesce(string_agg(t::text, E''\n'' ORDER BY t::text), '''')) FROM %s t', r.q) INTO sum;
    END IF;
    RETURN NEXT;
  END LOOP;
  obj := 'large objects';
  SELECT md5(coalesce(string_agg(md5(lo_get(oid)), ',' ORDER BY md5(lo_get(oid))), '')) INTO sum FROM pg_largeobject_metadata;
  RETURN NEXT;
END $f$;
SELECT obj || '|' || sum FROM pg_temp.nexb_checksums();
"#;

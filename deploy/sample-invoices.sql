-- A small invoicing database for the quickstart demo (about 20 MB).
CREATE TABLE customers (id int PRIMARY KEY, name text NOT NULL, email text, country text, meta jsonb);
CREATE TABLE invoices (
  id bigint PRIMARY KEY, customer_id int REFERENCES customers(id), issued date,
  total numeric(12,2), status text, lines jsonb, pdf bytea, note text);
INSERT INTO customers
  SELECT g, 'Customer ' || g, 'c' || g || '@example.com', (ARRAY['SK','CZ','AT','DE'])[1 + g % 4],
         jsonb_build_object('tier', g % 3)
  FROM generate_series(1, 8000) g;
INSERT INTO invoices
  SELECT g, 1 + g % 8000, date '2024-01-01' + (g % 700), (g * 37 % 100000) / 100.0,
         (ARRAY['draft','sent','paid'])[1 + g % 3],
         jsonb_build_array(jsonb_build_object('item', md5(g::text), 'qty', g % 7, 'price', g % 1000)),
         decode(md5(g::text) || md5((g + 1)::text), 'hex'), repeat(md5((g * 7)::text), 1 + g % 3)
  FROM generate_series(1, 80000) g;
CREATE VIEW unpaid AS SELECT * FROM invoices WHERE status <> 'paid';

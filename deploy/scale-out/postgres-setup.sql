-- Run once as a PostgreSQL superuser on the catalog server:
--   psql -v pw="'a long random password'" -f postgres-setup.sql
-- The controller creates its tables itself (versioned migrations) and needs no more
-- than owning its database. The catalog holds the controller CA's key: restrict who can
-- connect (pg_hba.conf: the replica hosts only, scram-sha-256, TLS on the network).
CREATE ROLE nexbackup LOGIN PASSWORD :pw;
CREATE DATABASE nexbackup OWNER nexbackup ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE nexbackup FROM PUBLIC;

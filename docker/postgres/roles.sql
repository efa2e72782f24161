-- Roles and databases of the stack, idempotently; run by the postgres-init service on every
-- `docker compose up` (docker/postgres/init.sh), as the superuser, so a changed password in .env
-- reaches PostgreSQL on the next `up`.
--
--   the municipal store: role $HURREN_PG_USER (LOGIN CREATEDB NOSUPERUSER) owns $HURREN_STORE_DB;
--                        the same role and attributes scripts/services gives it natively
--   Airflow's metadata:  role $AIRFLOW_DB_USER (LOGIN NOCREATEDB NOSUPERUSER) owns $AIRFLOW_DB
--
-- Values come from the environment through psql's \getenv (psql 15), never from the command
-- line, so no password shows in a process list; format(%I, %L) quotes every name and password.

\set ON_ERROR_STOP on
-- empty unless the environment sets them (\getenv leaves a variable alone when its source is unset)
\set store_role ''
\set store_password ''
\set store_db ''
\set airflow_role ''
\set airflow_password ''
\set airflow_db ''
\getenv store_role HURREN_PG_USER
\getenv store_password HURREN_PG_PASSWORD
\getenv store_db HURREN_STORE_DB
\getenv airflow_role AIRFLOW_DB_USER
\getenv airflow_password AIRFLOW_DB_PASSWORD
\getenv airflow_db AIRFLOW_DB

SELECT :'store_role' <> '' AND :'store_password' <> '' AND :'store_db' <> ''
   AND :'airflow_role' <> '' AND :'airflow_password' <> '' AND :'airflow_db' <> ''
   AND :'store_role' <> :'airflow_role' AND :'store_db' <> :'airflow_db' AS settings_ok \gset
\if :settings_ok
\else
  DO $$ BEGIN RAISE EXCEPTION 'roles.sql: set HURREN_PG_USER, HURREN_PG_PASSWORD, HURREN_STORE_DB, AIRFLOW_DB_USER, AIRFLOW_DB_PASSWORD and AIRFLOW_DB (two different roles, two different databases)'; END $$;
\endif

-- the municipal store
SELECT format('CREATE ROLE %I LOGIN CREATEDB NOSUPERUSER PASSWORD %L', :'store_role', :'store_password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'store_role') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB NOSUPERUSER PASSWORD %L', :'store_role', :'store_password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'store_db', :'store_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'store_db') \gexec

-- Airflow's metadata database
SELECT format('CREATE ROLE %I LOGIN NOCREATEDB NOSUPERUSER PASSWORD %L', :'airflow_role', :'airflow_password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'airflow_role') \gexec
SELECT format('ALTER ROLE %I LOGIN NOCREATEDB NOSUPERUSER PASSWORD %L', :'airflow_role', :'airflow_password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'airflow_db', :'airflow_role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'airflow_db') \gexec

-- Neither role may connect to the other's database (PUBLIC may connect to any database by default).
SELECT format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', :'store_db') \gexec
SELECT format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', :'airflow_db') \gexec

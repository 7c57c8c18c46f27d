-- The user directory the gateway reads: note the quoted table name
-- (unquoted `user` is the current role in PostgreSQL).
CREATE TABLE IF NOT EXISTS "user" (
    id uuid PRIMARY KEY,
    username text UNIQUE NOT NULL
);

INSERT INTO "user" (id, username) VALUES
    ('6f1c1d0e-4a7b-4c43-9a0e-2b8f1c9d7e01', 'alice')
ON CONFLICT DO NOTHING;

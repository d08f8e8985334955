-- Reverts 0006_collections, with every collection's table.
DROP SCHEMA embeddings CASCADE;
DROP TABLE collections;

-- Reverts 0001_users.
DROP TABLE users;
DROP FUNCTION touch_row();

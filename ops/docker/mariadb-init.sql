-- Run once by the mariadb image on an empty volume, after it has created the
-- database `legacy` and the user omnistock@'%' from the environment.
-- Same grants as ops/stack.sh: everything, including what binlog CDC needs.
GRANT ALL PRIVILEGES ON *.* TO 'omnistock'@'%';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'omnistock'@'%';

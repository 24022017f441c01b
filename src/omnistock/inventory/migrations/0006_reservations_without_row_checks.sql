-- A reservation and its lines are written by one statement (reserving/store.py), which plans
-- them against the channel it read under the batch's SKU locks; nothing deletes a reservation
-- or a channel. The two foreign keys checked again, row by row, what that statement already
-- guarantees, and each check locked the row it pointed at: every line its reservation (one
-- more WAL record a line), every reservation its channel's one row, shared by every
-- transaction reserving in that channel at once (multixacts on that row). Without them, in
-- benchmark runs back to back, one hot SKU took a fifth more lines a second.
ALTER TABLE reservations DROP CONSTRAINT reservations_channel_id_fkey;
ALTER TABLE reservation_lines DROP CONSTRAINT reservation_lines_reservation_id_fkey;

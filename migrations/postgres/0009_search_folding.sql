-- The search folds accents as SQLite's FTS5 tokenizer does (`café` finds `cafe`, and the
-- other way round): the index holds each word with its Latin letters' diacritics taken off
-- (every letter of Latin-1 and Latin Extended-A that decomposes into an ASCII letter and
-- accents), and queries are folded the same way.
CREATE FUNCTION parley_fold(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT translate($1,
    'ÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝàáâãäåçèéêëìíîïñòóôõöùúûüýÿĀāĂăĄąĆćĈĉĊċČčĎďĒēĔĕĖėĘęĚěĜĝĞğĠġĢģĤĥĨĩĪīĬĭĮįİĴĵĶķĹĺĻļĽľŃńŅņŇňŌōŎŏŐőŔŕŖŗŘřŚśŜŝŞşŠšŢţŤťŨũŪūŬŭŮůŰűŲųŴŵŶŷŸŹźŻżŽž',
    'AAAAAACEEEEIIIINOOOOOUUUUYaaaaaaceeeeiiiinooooouuuuyyAaAaAaCcCcCcCcDdEeEeEeEeEeGgGgGgGgHhIiIiIiIiIJjKkLlLlLlNnNnNnOoOoOoRrRrRrSsSsSsSsTtTtUuUuUuUuUuUuWwYyYZzZzZz') $$;
DROP INDEX messages_search;
CREATE INDEX messages_search ON messages USING GIN (to_tsvector('simple', parley_fold(content)))
    WHERE role IN ('user', 'assistant');

/* table.c: aligned text tables for loopctl's human output. */
#include "table.h"

#include <stdarg.h>

#include "format.h"

struct Table {
        size_t n_columns;
        size_t n_cells; /* header row included */
        char **cells; /* escaped, row-major */
        bool *right;
        size_t *width;
};

Table *table_free(Table *t)
{
        if (!t)
                return NULL;
        for (size_t i = 0; i < t->n_cells; i++)
                free(t->cells[i]);
        free(t->cells);
        free(t->right);
        free(t->width);
        free(t);
        return NULL;
}

static int table_append(Table *t, const char *const *row)
{
        char **cells = reallocarray(t->cells, t->n_cells + t->n_columns, sizeof(char *));
        if (!cells)
                return -ENOMEM;
        t->cells = cells;

        for (size_t i = 0; i < t->n_columns; i++) {
                char *e = display_escape(row[i]);
                if (!e) {
                        for (size_t j = 0; j < i; j++)
                                free(t->cells[t->n_cells + j]);
                        return -ENOMEM;
                }
                t->cells[t->n_cells + i] = e;
                t->width[i] = MAX(t->width[i], display_width(e));
        }
        t->n_cells += t->n_columns;
        return 0;
}

int table_new(Table **ret, size_t n_columns, const char *const *headers)
{
        _cleanup_(table_freep) Table *t = NULL;
        _cleanup_free_ const char **names = NULL;
        int r;

        t = calloc(1, sizeof(Table));
        if (!t)
                return -ENOMEM;
        t->n_columns = n_columns;
        t->right = calloc(n_columns, sizeof(bool));
        t->width = calloc(n_columns, sizeof(size_t));
        names = calloc(n_columns, sizeof(char *));
        if (!t->right || !t->width || !names)
                return -ENOMEM;

        for (size_t i = 0; i < n_columns; i++) {
                t->right[i] = headers[i][0] == '>';
                names[i] = headers[i] + t->right[i];
        }
        r = table_append(t, names);
        if (r < 0)
                return r;

        *ret = TAKE_PTR(t);
        return 0;
}

int table_add_row(Table *t, ...)
{
        _cleanup_free_ const char **row = calloc(t->n_columns, sizeof(char *));
        va_list ap;

        if (!row)
                return -ENOMEM;
        va_start(ap, t);
        for (size_t i = 0; i < t->n_columns; i++)
                row[i] = va_arg(ap, const char *);
        va_end(ap);

        return table_append(t, row);
}

static size_t table_rows(const Table *t)
{
        return t->n_cells / t->n_columns - 1;
}

bool table_empty(const Table *t)
{
        return table_rows(t) == 0;
}

void table_print(const Table *t, FILE *f)
{
        if (table_rows(t) > 0)
                table_print_always(t, f);
}

void table_print_always(const Table *t, FILE *f)
{
        for (size_t row = 0; row < t->n_cells; row += t->n_columns) {
                char *const *cells = t->cells + row;
                size_t end = t->n_columns;

                /* Stop after the last non-empty cell, so that no line ends in blanks. */
                while (end > 1 && cells[end - 1][0] == '\0')
                        end--;

                for (size_t col = 0; col < end; col++) {
                        size_t pad = t->width[col] - display_width(cells[col]);

                        if (col > 0)
                                fputc(' ', f);
                        if (t->right[col])
                                fprintf(f, "%*s", (int)pad, "");
                        fputs(cells[col], f);
                        if (!t->right[col] && col + 1 < end)
                                fprintf(f, "%*s", (int)pad, "");
                }
                fputc('\n', f);
        }
}

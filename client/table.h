/* table.h: aligned text tables for loopctl's human output, in the manner of losetup -l and lsblk. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "macro.h"

typedef struct Table Table;

/* Column headers are fixed at creation; a header starting with '>' is right-aligned (numbers). */
int table_new(Table **ret, size_t n_columns, const char *const *headers);
Table *table_free(Table *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(Table *, table_free);

/* Adds a row of exactly n_columns cells (NULL is an empty cell). Cells are escaped for the terminal. */
int table_add_row(Table *t, ...);
/* Prints the header and every row, columns separated by one space, no trailing blanks. Prints nothing
 * when the table has no rows. */
void table_print(const Table *t, FILE *f);
/* The same, and the header even when there are no rows. */
void table_print_always(const Table *t, FILE *f);
bool table_empty(const Table *t);

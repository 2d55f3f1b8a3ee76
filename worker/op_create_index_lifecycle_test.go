package worker_test

import (
	"testing"

	"github.com/refit-dev/refit/internal/pgtest"
)

// productsSchema is the table the create_index lifecycle cases index: some
// vendors are NULL, every sku is unique.
const productsSchema = `
	CREATE TABLE products (id bigint PRIMARY KEY, sku text NOT NULL, name text, price numeric, vendor int);
	INSERT INTO products SELECT i, 'sku-' || i, 'product ' || i, i % 40, CASE WHEN i % 7 = 0 THEN NULL ELSE i % 13 END
		FROM generate_series(1, 5000) i;
	ANALYZE products;`

// productsWriter is the application: it renames and reprices products and
// adds new ones (new skus, some without a vendor), never breaking the
// unique (vendor, sku) index.
var productsWriter = []string{
	"UPDATE products SET name = 'renamed ' || $1, price = $1 % 40 WHERE id = 1 + $1 % 5000",
	"INSERT INTO products (id, sku, name, price, vendor) VALUES (100000 + $1, 'new-' || $1, 'new ' || $1, $1 % 40, CASE WHEN $1 % 2 = 0 THEN NULL ELSE 1 END)",
}

func TestLifecycleCreateIndex(t *testing.T) {
	// NULLS NOT DISTINCT exists from PostgreSQL 15 on (refused before: see
	// TestCreateIndexNullsNotDistinctNeedsPG15).
	nullsNotDistinct, nullsNotDistinctDef := "", ""
	if pgtest.Shared(t).Version() >= 15 {
		nullsNotDistinct, nullsNotDistinctDef = "\n      nulls_not_distinct: true", " NULLS NOT DISTINCT"
	}
	for _, tc := range []lifecycleCase{
		{name: "opclass, order, include, with, nulls not distinct", schema: productsSchema, writer: productsWriter, data: []string{"products"}, abortBackfill: true, ops: `
  - create_index:
      name: products_sku_pattern
      table: products
      columns: [{name: sku, opclass: text_pattern_ops}]
      include: [price]
      with: {fillfactor: 80}
  - create_index:
      name: products_name_desc
      table: products
      columns: [{name: name, order: desc, nulls: last}, id]
      where: price > 10
  - create_index:
      name: products_vendor_sku_key
      table: products
      columns: [vendor, sku]
      unique: true` + nullsNotDistinct + `
      with: {deduplicate_items: off}`,
			done: `SELECT array_agg(pg_get_indexdef(indexrelid) || ' ' || indisvalid ORDER BY indexrelid::regclass::text) = ARRAY[
					'CREATE INDEX products_name_desc ON public.products USING btree (name DESC NULLS LAST, id) WHERE (price > (10)::numeric) true',
					'CREATE INDEX products_sku_pattern ON public.products USING btree (sku text_pattern_ops) INCLUDE (price) WITH (fillfactor=''80'') true',
					'CREATE UNIQUE INDEX products_vendor_sku_key ON public.products USING btree (vendor, sku)` + nullsNotDistinctDef + ` WITH (deduplicate_items=off) true']
				FROM pg_index WHERE indrelid = 'products'::regclass AND NOT indisprimary`},
		{name: "on a column the migration adds", schema: productsSchema, writer: productsWriter, data: []string{"products"}, ops: `
  - add_column:
      table: products
      column: {name: sku_upper, type: text}
      up: upper(sku)
  - create_index:
      name: products_sku_upper
      table: products
      columns: [{name: sku_upper, opclass: text_pattern_ops, order: desc}]
      include: [id, name]`,
			window: `SELECT count(*) = 0 FROM products WHERE sku_upper IS DISTINCT FROM upper(sku)`,
			done: `SELECT pg_get_indexdef('products_sku_upper'::regclass) = 'CREATE INDEX products_sku_upper ON public.products USING btree (sku_upper text_pattern_ops DESC) INCLUDE (id, name)'
				AND (SELECT indisvalid FROM pg_index WHERE indexrelid = 'products_sku_upper'::regclass)
				AND NOT EXISTS (SELECT 1 FROM products WHERE sku_upper IS DISTINCT FROM upper(sku))`},
	} {
		t.Run(tc.name, func(t *testing.T) { runLifecycle(t, tc) })
	}
}

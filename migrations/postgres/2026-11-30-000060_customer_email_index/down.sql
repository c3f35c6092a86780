DROP INDEX customers_account_email;

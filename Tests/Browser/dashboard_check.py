"""Opens a Colony manager's dashboard in headless Chromium and checks that it is live.

Usage: dashboard_check.py URL SCREENSHOT OBJECT_NAME

Checks, without reloading the page: the live feed connects, the named object appears in the
objects table, a pool job's row appears and its count of finished calls advances. Saves a
screenshot, prints what it saw as JSON, and exits 0; on a failed check it saves the
screenshot too and exits 1 saying which check failed.
"""
import json
import os
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

url, screenshot, object_name = sys.argv[1:4]
options = Options()
options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
for argument in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1100"]:
    options.add_argument(argument)
driver = webdriver.Chrome(service=Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")), options=options)


def wait_for(check, what, timeout=45):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception:
            value = None
        if value:
            return value
        time.sleep(0.2)
    driver.save_screenshot(screenshot)
    print(f"the dashboard did not show {what} within {timeout} s", file=sys.stderr)
    sys.exit(1)


def job_done():
    rows = driver.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]")
    return int(rows[0].get_attribute("data-done")) if rows else None


try:
    driver.set_page_load_timeout(30)
    driver.get(url)
    driver.execute_script("window.colonyLoadMarker = 'first load'")
    wait_for(lambda: driver.find_element(By.ID, "connection").text == "live", "its live feed connected")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, f'#objects tr[data-name="{object_name}"]'), f"the object '{object_name}'")
    first = wait_for(lambda: (job_done() or 0) + 1, "a pool job's progress") - 1
    advanced = wait_for(lambda: job_done() is not None and job_done() > first and job_done(), "the job's progress advance")
    marker = driver.execute_script("return window.colonyLoadMarker")
    if marker != "first load":
        print("the page reloaded; it must update in place", file=sys.stderr)
        sys.exit(1)
    rate = driver.find_element(By.ID, "task-rate").text
    driver.save_screenshot(screenshot)
    print(json.dumps({"first_done": first, "later_done": advanced, "task_rate": rate, "screenshot": screenshot}))
finally:
    driver.quit()

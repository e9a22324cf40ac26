"""Example jobs. ``baton run`` imports this package (config key ``jobs``) and all its modules.

Put your own ``@singleton_job`` functions in modules here, or point ``jobs:`` at your own
package.
"""
